"""Tiny Stable-Diffusion-shaped models (SD1.x, Taiyi, SDXL) built from configs with fixed seeds.

No weights can be downloaded here, so tests and the demo build their own models: real diffusers /
transformers / open_clip classes with random weights, saved with ``save_pretrained`` and loaded back
through exactly the code path a hub model takes (``from_pretrained`` on a folder).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
from pathlib import Path

from components.io import new_staging_dir, publish
from components.tiny_models_flow import FLOW_BUILDERS, FLOW_MODEL_NAMES

TINY_SD = "tiny-sd"
TINY_TAIYI = "tiny-taiyi"
TINY_SDXL = "tiny-sdxl"
TINY_CLIP = "tiny-clip"
TINY_BLIP = "tiny-blip"
TINY_MODEL_NAMES = (TINY_SD, TINY_TAIYI, TINY_SDXL, TINY_CLIP, TINY_BLIP, *FLOW_MODEL_NAMES)

TINY_RESOLUTION = 64  # pixels; the VAE downsamples by 8 -> 8x8 latents
_CROSS_ATTENTION_DIM = 32


def _open_clip_bpe_path() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's real BPE vocabulary, from the merges file open_clip ships.

    Same construction as OpenAI CLIP's tokenizer: 256 byte symbols, their end-of-word variants,
    the first 48,894 merges, then the two special tokens (49,408 entries).
    """
    from open_clip.tokenizer import bytes_to_unicode

    lines = gzip.open(_open_clip_bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    # model_max_length=77 and a pad token: without them the pipeline's tokenizer call overflows.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token="<|endoftext|>")


def chinese_bert_vocab() -> dict[str, int]:
    """WordPiece entries for ASCII words and the 3,000 first CJK code points.

    BERT's basic tokenizer splits CJK text into single characters, so one entry per character is
    enough for Chinese prompts (the layout of Taiyi-Stable-Diffusion-Chinese).
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_chars = [chr(c) for c in range(33, 127)]
    words = [
        "a",
        "an",
        "the",
        "of",
        "photo",
        "in",
        "on",
        "with",
        "and",
        "red",
        "blue",
        "green",
        "car",
        "robot",
        "dog",
        "cat",
        "toy",
        "sks",
    ]
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    tokens = dict.fromkeys(specials + ascii_chars + ["##" + c for c in ascii_chars] + words + cjk)
    return {tok: i for i, tok in enumerate(tokens)}


def chinese_bert_tokenizer(model_max_length: int = 77):
    from transformers import BertTokenizer

    return BertTokenizer(vocab=chinese_bert_vocab(), model_max_length=model_max_length)


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=_CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_vae(latent_channels: int = 4, **extra):
    """Four blocks, the 8x downsampling of the real VAEs; ``extra``: the 16-channel families' settings."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
        **extra,
    )


def sd_scheduler(prediction_type: str):
    from diffusers import DDPMScheduler

    # SD1.x's training scheduler settings; v-prediction is the SD2.x-768 variant.
    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        prediction_type=prediction_type,
        steps_offset=1,  # as SD1.x ships it; samplers warn (and space timesteps differently) without it
    )


def save_sd_pipeline(out_dir: Path, unet, vae, text_encoder, tokenizer, prediction_type: str = "epsilon") -> Path:
    """The components as a diffusers StableDiffusionPipeline folder (SD1.x scheduler, no safety checker)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=sd_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _save_sd(out_dir: Path, text_encoder, tokenizer, prediction_type: str) -> Path:
    """A tiny random U-Net and VAE around the given text encoder."""
    return save_sd_pipeline(out_dir, _tiny_unet(), tiny_vae(), text_encoder, tokenizer, prediction_type)


def build_tiny_sd(out_dir: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """SD1.x layout with a CLIP text encoder and CLIP's real BPE tokenizer."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    return _save_sd(out_dir, text_encoder, tokenizer, prediction_type)


def build_tiny_taiyi(out_dir: Path, seed: int = 0) -> Path:
    """Taiyi-Stable-Diffusion-Chinese layout: an SD1.x U-Net conditioned by a (Chinese) BERT encoder."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = chinese_bert_tokenizer()
    text_encoder = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=_CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=80,
        )
    )
    return _save_sd(out_dir, text_encoder, tokenizer, "epsilon")


def _clip_text_config(tokenizer, hidden_act: str, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_CROSS_ATTENTION_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_tiny_sdxl(out_dir: Path, seed: int = 0) -> Path:
    """SDXL layout: CLIP-L-like and OpenCLIP-bigG-like text encoders (the second with a projection and
    "!" as pad token, as SDXL ships them) sharing CLIP's real BPE vocabulary, a U-Net with the
    "text_time" added embedding (pooled text + 6 time ids) and linear attention projections."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    tokenizer_2 = clip_tokenizer()
    tokenizer_2.pad_token = "!"
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer, "quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_text_config(tokenizer_2, "gelu", projection_dim=_CROSS_ATTENTION_DIM)
    )
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * _CROSS_ATTENTION_DIM,  # both encoders' hidden states, concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + _CROSS_ATTENTION_DIM,
        norm_num_groups=32,
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        # SDXL's sampler and schedule as it ships (training makes a DDPMScheduler from this config).
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            steps_offset=1,
            timestep_spacing="leading",
        ),
        add_watermarker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_clip(out_dir: Path, seed: int = 0) -> Path:
    """An open_clip ViT/text-transformer pair, small, in open_clip's own local-dir format."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    model_cfg = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
    }
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
    return out_dir


def build_tiny_blip(out_dir: Path, seed: int = 0) -> Path:
    """A BLIP captioning model (vision encoder + BERT decoder) with a real BERT WordPiece tokenizer."""
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = chinese_bert_tokenizer(model_max_length=64)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


_BUILDERS = {
    TINY_SD: build_tiny_sd,
    TINY_TAIYI: build_tiny_taiyi,
    TINY_SDXL: build_tiny_sdxl,
    TINY_CLIP: build_tiny_clip,
    TINY_BLIP: build_tiny_blip,
    **FLOW_BUILDERS,
}


def ensure_tiny_model(name: str, models_dir: Path) -> Path:
    """Builds the named tiny model once under ``models_dir`` (atomically) and returns its folder."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown tiny model {name!r}; choose one of {', '.join(TINY_MODEL_NAMES)}")
    target = models_dir / name
    # A model built by other builder code is stale: the marker holds the fingerprint of this file
    # (and of the builder's own module when it lives elsewhere).
    sources = dict.fromkeys([Path(__file__), Path(inspect.getfile(_BUILDERS[name]))])
    fingerprint = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    marker = target / ".complete"
    if marker.exists() and marker.read_text().strip() == fingerprint:
        return target
    staging = new_staging_dir(target)
    _BUILDERS[name](staging)
    (staging / ".complete").write_text(fingerprint + "\n")
    return publish(staging, target)
