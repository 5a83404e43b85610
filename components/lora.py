"""LoRA on a Stable Diffusion U-Net (and optionally its text encoder): setup, state dicts, export.

The adapter is saved with its PEFT config as safetensors metadata: without it, an adapter trained
with alpha != rank reloads at the wrong scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from components.config import TrainParams
from components.io import ADAPTER_FILE, KOHYA_FILE

# Attention projections by text-encoder family (CLIP for SD1.x/2.x/XL, BERT for Taiyi-style models).
_TEXT_ENCODER_TARGETS = {
    "clip_text_model": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "bert": ["query", "key", "value", "attention.output.dense"],
}


def unet_lora_config(params: TrainParams) -> LoraConfig:
    return LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        init_lora_weights="gaussian",  # A ~ N(0, 1/r), B = 0: training starts exactly at the base model
        target_modules=list(params.target_modules),
    )


def text_encoder_lora_config(params: TrainParams, text_encoder) -> LoraConfig:
    model_type = text_encoder.config.model_type
    if model_type not in _TEXT_ENCODER_TARGETS:
        raise ValueError(f"train_text_encoder: no LoRA targets known for text encoder type {model_type!r}")
    scale = params.alpha / params.rank  # same alpha/rank ratio as the U-Net adapter
    return LoraConfig(
        r=params.text_encoder_rank,
        lora_alpha=scale * params.text_encoder_rank,
        lora_dropout=params.dropout,
        init_lora_weights="gaussian",
        target_modules=_TEXT_ENCODER_TARGETS[model_type],
    )


def add_lora(unet, text_encoder, params: TrainParams) -> list[torch.nn.Parameter]:
    """Freezes the base weights, adds the adapters, returns the trainable parameters."""
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(unet_lora_config(params))
    if params.train_text_encoder:
        text_encoder.add_adapter(text_encoder_lora_config(params, text_encoder))
    modules = [unet, text_encoder] if params.train_text_encoder else [unet]
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def lora_state(unet, text_encoder, params: TrainParams) -> dict[str, torch.Tensor]:
    """PEFT-format LoRA tensors, prefixed by component: what checkpoints store."""
    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    if params.train_text_encoder:
        state.update({f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(text_encoder).items()})
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def load_lora_state(unet, text_encoder, state: dict[str, torch.Tensor]) -> None:
    for prefix, module in (("unet.", unet), ("text_encoder.", text_encoder)):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            result = set_peft_model_state_dict(module, part)
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"checkpoint has LoRA keys the model lacks: {result.unexpected_keys[:3]}")


def save_adapter(out_dir: Path, unet, text_encoder, params: TrainParams) -> Path:
    """Diffusers-format adapter (what ``pipe.load_lora_weights`` reads) plus a kohya-format export."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from safetensors.torch import save_file

    state = lora_state(unet, text_encoder, params)
    unet_layers = convert_state_dict_to_diffusers(_strip(state, "unet."))
    te_state = _strip(state, "text_encoder.")
    te_layers = convert_state_dict_to_diffusers(te_state) if te_state else None
    StableDiffusionPipeline.save_lora_weights(
        save_directory=out_dir,
        unet_lora_layers=unet_layers,
        text_encoder_lora_layers=te_layers,
        unet_lora_adapter_metadata=adapter_metadata(unet.peft_config["default"]),
        text_encoder_lora_adapter_metadata=(adapter_metadata(text_encoder.peft_config["default"]) if te_layers else None),
        weight_name=ADAPTER_FILE,
        safe_serialization=True,
    )
    kohya = convert_state_dict_to_kohya(state)
    # diffusers' converter writes alpha = rank; the adapter's real alpha is what tools must apply.
    for key in [k for k in kohya if k.endswith(".alpha")]:
        is_te = key.startswith("lora_te")
        kohya[key] = torch.tensor(
            text_encoder.peft_config["default"].lora_alpha if is_te else params.alpha, dtype=torch.float32
        )
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(out_dir / KOHYA_FILE), metadata={"format": "pt"})
    return out_dir / ADAPTER_FILE


def adapter_metadata(config: LoraConfig) -> dict:
    """The PEFT config saved beside the weights, with its sets sorted: peft keeps `target_modules` as a
    set, whose order follows Python's hash seed, and the same weights must give the same file bytes."""
    return {k: sorted(v) if isinstance(v, set | frozenset) else v for k, v in config.to_dict().items()}


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
