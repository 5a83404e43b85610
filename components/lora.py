"""LoRA on a family's denoiser (and optionally its text encoders): setup, state dicts, export.

Which modules get LoRA and which pipeline class saves the adapter is the family's word; this file
only does what is the same for all of them. The adapter is saved with each component's PEFT config
as safetensors metadata: without it, an adapter trained with alpha != rank reloads at the wrong scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from components.config import TrainParams
from components.families import Family, Parts
from components.io import ADAPTER_FILE, KOHYA_FILE, canonical_safetensors


def add_lora(family: Family, parts: Parts, params: TrainParams) -> list[torch.nn.Parameter]:
    """Freezes the base weights, adds the adapters where the family says, returns the trainable parameters."""
    for module in parts.modules():
        module.requires_grad_(False)
    adaptable = parts.adaptable()
    targets = family.lora_targets(parts, params.target_modules, params.train_text_encoder)
    for name, modules in targets.items():
        # Text encoders keep the denoiser's alpha/rank ratio at their own rank.
        is_denoiser = name == parts.denoiser_name
        rank = params.rank if is_denoiser else params.text_encoder_rank
        adaptable[name].add_adapter(
            LoraConfig(
                r=rank,
                lora_alpha=params.alpha if is_denoiser else params.alpha / params.rank * rank,
                lora_dropout=params.dropout,
                init_lora_weights="gaussian",  # A ~ N(0, 1/r), B = 0: training starts exactly at the base model
                target_modules=list(modules),
            )
        )
    return [p for m in adapted(parts).values() for p in m.parameters() if p.requires_grad]


def adapted(parts: Parts) -> dict[str, torch.nn.Module]:
    """The parts that carry an adapter, by component name (denoiser first)."""
    return {name: m for name, m in parts.adaptable().items() if getattr(m, "peft_config", None)}


def lora_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """PEFT-format LoRA tensors, prefixed by component: what checkpoints store."""
    state = {f"{name}.{k}": v for name, m in modules.items() for k, v in get_peft_model_state_dict(m).items()}
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def load_lora_state(modules: dict[str, torch.nn.Module], state: dict[str, torch.Tensor]) -> None:
    for name, module in modules.items():
        part = _strip(state, name + ".")
        if part:
            result = set_peft_model_state_dict(module, part)
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"checkpoint has LoRA keys the model lacks: {result.unexpected_keys[:3]}")


def adapter_metadata(module: torch.nn.Module) -> dict:
    """The component's PEFT config as saved with the weights. Sets (target_modules) are sorted: their
    order follows Python's hash seed, and the same weights must give the same bytes."""
    config = module.peft_config["default"].to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def save_adapter(out_dir: Path, family: Family, parts: Parts) -> Path:
    """Diffusers-format adapter (what the family pipeline's ``load_lora_weights`` reads), saved by that
    pipeline's ``save_lora_weights``, plus a kohya-format export where the family has one."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    modules = adapted(parts)
    state = lora_state(modules)
    kwargs = {}
    for name, module in modules.items():
        layers = _strip(state, name + ".")
        kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(layers) if family.convert_lora_keys else layers
        kwargs[f"{name}_lora_adapter_metadata"] = adapter_metadata(module)
    family.pipeline_class().save_lora_weights(
        save_directory=out_dir, weight_name=ADAPTER_FILE, safe_serialization=True, **kwargs
    )
    canonical_safetensors(out_dir / ADAPTER_FILE)
    kohya = family.kohya_state(state, {name: m.peft_config["default"].lora_alpha for name, m in modules.items()})
    if kohya is not None:
        save_file({k: v.contiguous() for k, v in kohya.items()}, str(out_dir / KOHYA_FILE), metadata={"format": "pt"})
    return out_dir / ADAPTER_FILE


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
