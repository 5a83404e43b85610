"""SD3 / SD3.5 (StableDiffusion3Pipeline): two CLIP encoders (penultimate states side by side, projections
pooled) and T5, one joint MMDiT sequence, rectified flow with the scheduler's fixed shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.families.flow_family import FlowMatchingFamily

T5_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length: train as it generates


class StableDiffusion3(FlowMatchingFamily):
    name = "sd3"
    pipeline = "StableDiffusion3Pipeline"
    text_encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")  # CLIP-L, CLIP-G, T5-XXL
    tokenizer_names = ("tokenizer", "tokenizer_2", "tokenizer_3")
    lora_text_encoders = ("text_encoder", "text_encoder_2")
    timestep_scale = 1000.0  # SD3Transformer2DModel takes the scheduler's timesteps, s x 1000

    def tokenize(self, parts, prompts):
        tokens = {}
        for name, tok in parts.tokenizers.items():
            length = T5_SEQUENCE_LENGTH if name == "text_encoder_3" else tok.model_max_length
            tokens[name] = tok(
                prompts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
            ).input_ids
        return tokens

    def encode_prompts(self, parts, tokens):
        hidden, pooled = [], []
        for name in ("text_encoder", "text_encoder_2"):
            out = parts.text_encoders[name](tokens[name], output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # the pipeline's default (clip_skip None)
            pooled.append(out.text_embeds)
        t5 = parts.text_encoders["text_encoder_3"](tokens["text_encoder_3"])[0]
        clip = torch.cat(hidden, dim=-1)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"hidden": torch.cat([clip, t5], dim=-2), "pooled": torch.cat(pooled, dim=-1)}

    def predict(self, parts, noisy, timesteps, prompt, image) -> torch.Tensor:
        return parts.denoiser(
            hidden_states=noisy,
            timestep=timesteps,
            encoder_hidden_states=prompt["hidden"],
            pooled_projections=prompt["pooled"],
            return_dict=False,
        )[0]
