"""FLUX.1 dev and schnell (FluxPipeline): CLIP pooled + T5 states, packed 2x2 latent patches with position
ids, rectified flow with FLUX.1-dev's image-size-dependent shift, and the guidance embedding for dev."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.families import flow_matching as fm
from components.families.flow_family import FlowMatchingFamily
from components.families.flux_kohya import flux_kohya_state


class Flux(FlowMatchingFamily):
    name = "flux"
    pipeline = "FluxPipeline"
    text_encoder_names = ("text_encoder", "text_encoder_2")  # CLIP-L (pooled), T5-XXL (sequence)
    tokenizer_names = ("tokenizer", "tokenizer_2")
    timestep_scale = 1.0  # FluxTransformer2DModel takes s in [0, 1] (the pipeline divides by 1000)

    def native_resolution(self, folder: Path) -> int:
        # Flux's transformer config has no sample_size; the VAE's is the training size (1024 for FLUX.1).
        return int(json.loads((folder / "vae" / "config.json").read_text())["sample_size"])

    def guidance_kwargs(self, pipe, guidance_scale, negative_prompt, batch):
        # T5 states as long as the model's tokenizer makes them (training pads to the same length).
        kwargs = {"max_sequence_length": min(512, pipe.tokenizer_2.model_max_length)}
        if pipe.transformer.config.guidance_embeds or guidance_scale <= 1.0:
            # FLUX.1-dev: guidance is an input of the distilled model (FluxPipeline's guidance_scale).
            return kwargs | super().guidance_kwargs(pipe, guidance_scale, negative_prompt, batch)
        # No guidance embedding (schnell layout, toyworld-flux): guidance is true classifier-free guidance,
        # which FluxPipeline runs only given a negative prompt; the empty one, as the U-Net pipelines use.
        return kwargs | {"true_cfg_scale": guidance_scale, "negative_prompt": [negative_prompt or ""] * batch}

    def encode_prompts(self, parts, tokens):
        clip, t5 = parts.text_encoders["text_encoder"], parts.text_encoders["text_encoder_2"]
        return {
            "pooled": clip(tokens["text_encoder"], output_hidden_states=False).pooler_output,
            "t5": t5(tokens["text_encoder_2"], output_hidden_states=False)[0],
        }

    def predict(self, parts, noisy, timesteps, prompt, image) -> torch.Tensor:
        b, _, h, w = noisy.shape
        device, dtype = noisy.device, noisy.dtype
        guidance = fm.guidance_input(parts.denoiser.config, b)
        out = parts.denoiser(
            hidden_states=fm.pack_latents(noisy),
            timestep=timesteps.to(dtype),
            guidance=None if guidance is None else guidance.to(device),
            pooled_projections=prompt["pooled"],
            encoder_hidden_states=prompt["t5"],
            txt_ids=fm.text_ids(prompt["t5"].shape[1], device, dtype),
            img_ids=fm.latent_image_ids(h, w, device, dtype),
            return_dict=False,
        )[0]
        return fm.unpack_latents(out, h, w)

    def kohya_state(self, peft_state, alphas):
        return flux_kohya_state(peft_state, alphas)
