"""Random-weight pipelines of the real models' shapes (from their public configs; nothing downloaded),
for speed and memory measurements on a GPU. Weights are drawn on ``device`` (seconds on a GPU, minutes
for SDXL on a CPU) and saved in ``save_dtype``, then loaded back through conceptlab's own code path.

Each shape is listed in SHAPED with its native resolution and diffusers' DreamBooth-LoRA script for
it; a new family adds its maker there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from components.plan_shapes import FLUX_DEV_TRANSFORMER, SD15_UNET, SDXL_UNET


def _clip_text(tokenizer, hidden: int, layers: int, heads: int, act: str, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection or hidden,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _sd_vae(scaling_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=scaling_factor,
    )


def sd15_shaped(seed: int = 0, device: str = "cpu"):
    """Stable Diffusion 1.5: 860M U-Net, CLIP ViT-L/14 text encoder, 512 px."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from components.tiny_models import clip_tokenizer

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = _sd_vae(0.18215)
        text_encoder = _clip_text(tokenizer, 768, 12, 12, "quick_gelu")
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sdxl_shaped(seed: int = 0, device: str = "cpu"):
    """SDXL base 1.0: 2.6B U-Net, CLIP ViT-L and OpenCLIP bigG text encoders, 1024 px."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from components.tiny_models import clip_tokenizer

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer()
    tokenizer_2.pad_token = "!"
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = _sd_vae(0.13025)
        text_encoder = _clip_text(tokenizer, 768, 12, 12, "quick_gelu")
        text_encoder_2 = _clip_text(tokenizer_2, 1280, 32, 20, "gelu", projection=1280)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def flux_dev_shaped(seed: int = 0, device: str = "cpu"):
    """FLUX.1-dev: 11.9B transformer (19 double- and 38 single-stream blocks, guidance embedding), 16-channel
    VAE, CLIP ViT-L (pooled) and T5 (states), 1024 px. T5-XXL (4.7B) is shrunk to one layer of its width:
    training caches its output ([n, 512, 4096], the shape the transformer reads) before the loop, so the
    loop's speed and memory do not depend on its depth; only caching does."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from components.tiny_models import clip_tokenizer
    from components.tiny_models_flow import FLUX_DEV_SCHEDULER, FLUX_VAE_FACTORS, t5_tokenizer

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    with torch.device(device):
        transformer = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=16,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            use_quant_conv=False,
            use_post_quant_conv=False,
            **FLUX_VAE_FACTORS,
        )
        text_encoder = _clip_text(tokenizer, 768, 12, 12, "quick_gelu")
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=4096,
                d_kv=64,
                d_ff=10240,
                num_layers=1,
                num_heads=64,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
                is_encoder_decoder=False,
                use_cache=False,
            )
        )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


# name -> (pipeline maker, native resolution, diffusers' reference DreamBooth-LoRA script for that family)
SHAPED: dict[str, tuple[Callable, int, str]] = {
    "sd15": (sd15_shaped, 512, "train_dreambooth_lora.py"),
    "sdxl": (sdxl_shaped, 1024, "train_dreambooth_lora_sdxl.py"),
    "flux-dev": (flux_dev_shaped, 1024, "train_dreambooth_lora_flux.py"),
}


def build_shaped(name: str, out_dir: Path, device: str = "cpu", save_dtype=torch.float32, seed: int = 0) -> Path:
    """The named shape's random weights drawn on ``device``, saved as a pipeline folder (once)."""
    if not (out_dir / "model_index.json").exists():
        SHAPED[name][0](seed, device).to("cpu", save_dtype).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_sd15_shaped(out_dir: Path, seed: int = 0) -> Path:
    return build_shaped("sd15", out_dir, seed=seed)
