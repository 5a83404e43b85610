"""What Flux.1 and SD3/3.5 share as families: a transformer denoiser trained by flow matching on a
16-channel latent, sampled by FlowMatchEulerDiscreteScheduler, T5 as the last (frozen) text encoder."""

from __future__ import annotations

from typing import ClassVar

import torch

from components.config import ConfigError
from components.families import flow_matching as fm
from components.families.base import Family, LossOptions, Noised, Parts

# For a rectified-flow path, a deterministic DDIM step is an Euler step of the velocity ODE, so both names
# mean the model's own flow-matching Euler sampler; the other samplers assume a DDPM noise schedule.
_FLOW_SAMPLERS = ("euler", "ddim")


class FlowMatchingFamily(Family):
    denoiser_name = "transformer"
    # Attention projections of the image stream and, in joint (MMDiT) blocks, of the text stream.
    default_lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    lora_text_encoders: ClassVar[tuple[str, ...]] = ("text_encoder",)  # those save_lora_weights can write
    noise_density: ClassVar[fm.Density] = "logit_normal"  # the SD3 paper's choice for rectified flow
    timestep_scale: ClassVar[float] = 1000.0  # what the transformer's timestep input is: s x this
    convert_lora_keys = False  # SD3's loader skips to_q/to_k/to_v/to_out in the older key names

    def training_scheduler(self, pipeline_scheduler):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(pipeline_scheduler.config)

    def set_sampler(self, pipe, sampler: str) -> None:
        if sampler not in _FLOW_SAMPLERS:
            raise ValueError(
                f"sampler {sampler!r}: {self.name} is a flow-matching model and samples with its own "
                f"FlowMatchEulerDiscreteScheduler; set generation scheduler to one of {', '.join(_FLOW_SAMPLERS)}"
            )
        # Keep the pipeline's scheduler: its config carries the model's shift.

    def image_seq_len(self, latents: torch.Tensor) -> int:
        """Tokens the transformer sees for these latents (the dynamic shift grows with it)."""
        return latents.shape[-2] * latents.shape[-1] // 4  # 2x2 patches in both Flux and SD3

    def noise_shift(self, scheduler, latents: torch.Tensor, options: LossOptions) -> float:
        """train.timestep_shift, or (auto) the shift the model's scheduler uses for images of this size."""
        if options.timestep_shift == "auto":
            return fm.scheduler_shift(scheduler.config, self.image_seq_len(latents))
        return float(options.timestep_shift)

    def noisy_input(self, scheduler, latents, noise, g, options: LossOptions) -> Noised:
        density = self.noise_density if options.timestep_density == "auto" else options.timestep_density
        u = fm.sample_noise_levels(
            latents.shape[0],
            g,
            density,
            logit_mean=options.timestep_logit_mean,
            logit_std=options.timestep_logit_std,
            mode_scale=options.timestep_mode_scale,
        )
        sigmas = fm.shift_noise_levels(u, self.noise_shift(scheduler, latents, options))
        return Noised(
            noisy=fm.noisy_input(latents, noise, sigmas),
            timesteps=sigmas * self.timestep_scale,
            target=fm.velocity_target(latents, noise),
        )

    def check_loss_options(self, options: LossOptions) -> None:
        # Min-SNR weights and offset noise are defined on a DDPM schedule; a flow-matching model's
        # counterparts are the noise-level density and shift.
        for key, off in (("snr_gamma", None), ("noise_offset", 0.0)):
            if getattr(options, key) != off:
                raise ConfigError(
                    f"train.{key} applies to the DDPM U-Net families (SD1.x/2.x, SDXL); {self.name} trains by "
                    f"flow matching: set it to {off!r} and shape the noise levels with train.timestep_density "
                    f"and train.timestep_shift instead"
                )

    def lora_targets(self, parts: Parts, target_modules: list[str] | None, train_text_encoder: bool):
        targets = super().lora_targets(parts, target_modules, train_text_encoder)
        # T5 stays frozen: the pipelines' save_lora_weights/load_lora_weights carry no T5 adapter.
        return {k: v for k, v in targets.items() if k == self.denoiser_name or k in self.lora_text_encoders}
