"""Base models for the memory planner, built on the meta device (shapes only: no weights, no memory, no
download): a local diffusers folder through its own config files, or a named shape of a published model
(flux.1-dev, sdxl, sd15, sd3) from its public config values."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.families import Family, family_for, family_named

# The published models' denoiser configs, shared with benchmarks/shaped.py (which draws real weights).
SD15_UNET = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SDXL_UNET = dict(
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)


@dataclass
class MetaModel:
    """A base model's frozen parts on the meta device, with the family that trains it."""

    name: str
    family: Family
    denoiser: torch.nn.Module
    text_encoders: dict[str, torch.nn.Module]
    tokenizers: dict[str, Any]
    vae: torch.nn.Module

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def meta_model_from_folder(folder: Path) -> MetaModel:
    """The folder's model from its model_index.json and component configs (weights are not read)."""
    import diffusers
    import transformers

    family = family_for(folder)
    index = json.loads((folder / "model_index.json").read_text())

    def component(name: str):
        library, cls_name = index[name]
        cls = getattr(diffusers if library == "diffusers" else transformers, cls_name)
        if library == "diffusers":
            return cls.from_config(cls.load_config(folder / name))
        return cls(cls.config_class.from_pretrained(folder / name))

    with torch.device("meta"):
        denoiser = component(family.denoiser_name)
        encoders = {n: component(n) for n in family.text_encoder_names}
        vae = component("vae")
    tokenizers = {}
    for enc, tok in zip(family.text_encoder_names, family.tokenizer_names, strict=True):
        library, cls_name = index[tok]
        tokenizers[enc] = getattr(transformers, cls_name).from_pretrained(folder / tok)
    return MetaModel(str(folder), family, denoiser, encoders, tokenizers, vae)


def _clip(hidden: int, layers: int, heads: int, act: str, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or hidden,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _t5_xxl():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=32128,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=24,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
        )
    )


def _vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **extra,
    )


def _sd15():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**SD15_UNET)
    return unet, {"text_encoder": _clip(768, 12, 12, "quick_gelu")}, _vae()


def _sdxl():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**SDXL_UNET)
    encoders = {"text_encoder": _clip(768, 12, 12, "quick_gelu"), "text_encoder_2": _clip(1280, 32, 20, "gelu", 1280)}
    return unet, encoders, _vae()


def _sd3():
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=192,
    )
    encoders = {
        "text_encoder": _clip(768, 12, 12, "quick_gelu", 768),
        "text_encoder_2": _clip(1280, 32, 20, "gelu", 1280),
        "text_encoder_3": _t5_xxl(),
    }
    return transformer, encoders, _vae(16, use_quant_conv=False, use_post_quant_conv=False)


def _flux_dev():
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
    encoders = {"text_encoder": _clip(768, 12, 12, "quick_gelu"), "text_encoder_2": _t5_xxl()}
    return transformer, encoders, _vae(16, use_quant_conv=False, use_post_quant_conv=False)


# name -> (pipeline class, maker of (denoiser, text encoders, vae), native resolution)
SHAPES: dict[str, tuple[str, Callable, int]] = {
    "sd15": ("StableDiffusionPipeline", _sd15, 512),
    "sdxl": ("StableDiffusionXLPipeline", _sdxl, 1024),
    "sd3": ("StableDiffusion3Pipeline", _sd3, 1024),
    "flux.1-dev": ("FluxPipeline", _flux_dev, 1024),
}


def meta_model_named(name: str) -> MetaModel:
    if name not in SHAPES:
        raise ValueError(f"shape {name!r}: choose one of {', '.join(SHAPES)}")
    from components.tiny_models import clip_tokenizer
    from components.tiny_models_flow import t5_tokenizer

    pipeline, make, _ = SHAPES[name]
    with torch.device("meta"):
        denoiser, encoders, vae = make()
    # Real vocabularies where packages ship them: the token counts are what the conditioning's shape needs.
    tokenizers = {n: t5_tokenizer() if e.config.model_type == "t5" else clip_tokenizer() for n, e in encoders.items()}
    return MetaModel(name, family_named(pipeline), denoiser, encoders, tokenizers, vae)
