"""SDXL (StableDiffusionXLPipeline): two CLIP text encoders whose penultimate hidden states are
concatenated, the second's pooled projection, and "time ids" (original size, crop top-left, target
size) that tell the U-Net how each training image was made. DDPM noise as in SD1.x/2.x.
The refiner (StableDiffusionXLImg2ImgPipeline) is not a supported base."""

from __future__ import annotations

import torch

from components.families.base import Parts, TrainImage
from components.families.sd import StableDiffusion


class StableDiffusionXL(StableDiffusion):
    name = "sdxl"
    pipeline = "StableDiffusionXLPipeline"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    tokenizer_names = ("tokenizer", "tokenizer_2")
    pipeline_kwargs = {"add_watermarker": False}  # evaluation needs raw outputs
    kohya_prefixes = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}

    def encode_prompts(self, parts: Parts, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """As StableDiffusionXLPipeline.encode_prompt (no clip skip): penultimate hidden states of both
        encoders side by side, and the pooled output of the one with a projection (the second)."""
        hidden, pooled = [], None
        for name, encoder in parts.text_encoders.items():
            out = encoder(tokens[name], output_hidden_states=True)
            if out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return {"hidden": torch.cat(hidden, dim=-1), "pooled": pooled}

    def image_conditioning(self, image: TrainImage, resolution: int, flipped: bool) -> dict[str, torch.Tensor]:
        """Time ids (original height, width, crop top, left, target height, width) as SDXL was trained:
        the crop's top-left in the frame where the crop is the target size (the image's aspect bucket,
        or ``resolution`` square). A flipped image's crop is mirrored, so its left offset is measured
        from the other side."""
        width, height = image.original_size
        target_width, target_height = image.target_size(resolution)
        top = left = 0
        if image.crop_box is not None:
            box_left, box_top, box_right, _ = image.crop_box
            scale = target_width / (box_right - box_left)  # the crop was resized to the training size
            if flipped:
                box_left = width - box_right
            top, left = round(box_top * scale), round(box_left * scale)
        ids = [height, width, top, left, target_height, target_width]
        return {"time_ids": torch.tensor(ids, dtype=torch.float32)}

    def predict(self, parts, noisy, timesteps, prompt, image) -> torch.Tensor:
        added = {"text_embeds": prompt["pooled"], "time_ids": image["time_ids"].to(noisy.dtype)}
        return parts.denoiser(noisy, timesteps, prompt["hidden"], added_cond_kwargs=added).sample
