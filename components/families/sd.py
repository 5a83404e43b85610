"""SD1.x and SD2.x (StableDiffusionPipeline): one text encoder (CLIP, or BERT as in Taiyi), a U-Net,
DDPM noise with an epsilon (SD1.x, SD2.x-base) or v-prediction (SD2.x-768) target."""

from __future__ import annotations

import torch

from components.families.base import Family, Noised, Parts


def ddpm_noisy_input(scheduler, latents: torch.Tensor, noise: torch.Tensor, g: torch.Generator) -> Noised:
    """DDPM forward process at uniformly drawn timesteps; target by the scheduler's prediction type."""
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")
    return Noised(noisy, timesteps, target)


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

    def noisy_input(self, scheduler, latents, noise, g) -> Noised:
        return ddpm_noisy_input(scheduler, latents, noise, g)

    def predict(self, parts, noisy, timesteps, prompt, image) -> torch.Tensor:
        return parts.denoiser(noisy, timesteps, prompt["hidden"]).sample
