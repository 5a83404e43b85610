"""SD1.x and SD2.x (StableDiffusionPipeline): one text encoder (CLIP, or BERT as in Taiyi), a U-Net,
DDPM noise with an epsilon (SD1.x, SD2.x-base) or v-prediction (SD2.x-768) target."""

from __future__ import annotations

import torch

from components.config import ConfigError
from components.families.base import Family, LossOptions, Noised, Parts


def loss_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the U-Net is trained to output for ``latents`` noised with ``noise`` at ``timesteps``: the
    noise itself (epsilon) or the velocity sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * latents."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(
        f"scheduler/scheduler_config.json: prediction_type {kind!r} is not one train supports "
        f"('epsilon', 'v_prediction'); use a base model whose scheduler predicts one of them"
    )


NO_LOSS_OPTIONS = LossOptions()


def offset_noise(noise: torch.Tensor, offset: float, g: torch.Generator) -> torch.Tensor:
    """noise + offset·n with one n ~ N(0, 1) per row and channel, drawn from ``g``: a shift of each
    channel's mean, so the model can learn images darker or brighter overall than the average."""
    return noise + offset * torch.randn((*noise.shape[:2], *([1] * (noise.ndim - 2))), generator=g)


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) of the DDPM schedule at ``timesteps``."""
    alpha_bar = scheduler.alphas_cumprod.double()[timesteps]
    return (alpha_bar / (1 - alpha_bar)).float()


def min_snr_weights(snr_values: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights per row (Hang et al. 2023): min(snr, gamma)/snr for an epsilon target,
    min(snr, gamma)/(snr + 1) for a v target. At snr 0 (a zero-terminal-SNR schedule's last step) the
    epsilon weight is its limit, 1."""
    clipped = snr_values.clamp(max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr_values + 1)
    return torch.where(snr_values > 0, clipped / snr_values.clamp(min=torch.finfo(snr_values.dtype).tiny), 1.0)


def ddpm_noisy_input(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, g: torch.Generator, options: LossOptions = NO_LOSS_OPTIONS
) -> Noised:
    """DDPM forward process at uniformly drawn timesteps; the target by the scheduler's prediction type;
    with noise_offset, offset noise (drawn after the timesteps); with snr_gamma, min-SNR weights."""
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g)
    if options.noise_offset:
        noise = offset_noise(noise, options.noise_offset, g)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    weights = None
    if options.snr_gamma is not None:
        weights = min_snr_weights(snr(scheduler, timesteps), options.snr_gamma, scheduler.config.prediction_type)
    return Noised(noisy, timesteps, loss_target(scheduler, latents, noise, timesteps), weights)


def refuse_flow_options(family: str, options: LossOptions) -> None:
    """DDPM families draw timesteps uniformly from the schedule: the flow-matching keys do not apply."""
    for key, default in (("timestep_density", "auto"), ("timestep_shift", "auto")):
        if getattr(options, key) != default:
            raise ConfigError(
                f"train.{key} applies to flow-matching models (Flux, SD3); {family} is a DDPM U-Net model: "
                f"leave it at {default!r} (its options are snr_gamma and noise_offset)"
            )


class StableDiffusion(Family):
    name = "sd"
    pipeline = "StableDiffusionPipeline"
    pipeline_kwargs = {"safety_checker": None, "requires_safety_checker": False}  # evaluation needs raw outputs
    kohya_prefixes = {"unet": "lora_unet", "text_encoder": "lora_te"}  # kohya sd-scripts' SD1.x/2.x names

    def training_scheduler(self, pipeline_scheduler):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(pipeline_scheduler.config)

    def encode_prompts(self, parts: Parts, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"hidden": parts.text_encoders["text_encoder"](tokens["text_encoder"])[0]}

    def noisy_input(self, scheduler, latents, noise, g, options) -> Noised:
        return ddpm_noisy_input(scheduler, latents, noise, g, options)

    def check_loss_options(self, options: LossOptions) -> None:
        refuse_flow_options(self.name, options)

    def predict(self, parts, noisy, timesteps, prompt, image) -> torch.Tensor:
        return parts.denoiser(noisy, timesteps, prompt["hidden"]).sample
