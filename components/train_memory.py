"""Memory options of training (train.optimizer, train.base_quantization, train.offload_frozen): whether
they can apply on this machine, the quantized load of the frozen denoiser, and what happens to the
frozen VAE and text encoders once the latents and text embeddings are cached.

The 8-bit optimizer and the quantized base use bitsandbytes, which needs a CUDA GPU and the locked
`gpu` extra; asked for elsewhere they are refused before anything is loaded, naming the key.
"""

from __future__ import annotations

import gc
import importlib.util

import torch

from components.config import ConfigError, TrainParams
from components.families import Family, Parts

GPU_EXTRA = "uv sync --frozen --extra gpu"


def _needs_bitsandbytes(key: str, value: str, device: torch.device) -> None:
    missing = []
    if device.type != "cuda":
        missing.append(f"a CUDA GPU (this run is on the {device.type.upper()})")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append(f"bitsandbytes, the locked `gpu` extra (run `{GPU_EXTRA}`)")
    if missing:
        raise ConfigError(f"train.{key} {value!r} needs {' and '.join(missing)}; or set train.{key} to its default")


def check_memory_options(params: TrainParams, device: torch.device) -> None:
    """Raises ConfigError, naming the key, for a memory option this machine cannot run."""
    if params.optimizer == "adamw_8bit":
        _needs_bitsandbytes("optimizer", params.optimizer, device)
    if params.base_quantization != "none":
        _needs_bitsandbytes("base_quantization", params.base_quantization, device)


def quantization_config(params: TrainParams, family: Family, compute_dtype: torch.dtype):
    """diffusers' pipeline quantization config that loads only the denoiser in NF4 or int8 (the frozen
    weights; LoRA layers added on top stay in float), or None for train.base_quantization 'none'."""
    if params.base_quantization == "none":
        return None
    from diffusers import BitsAndBytesConfig, PipelineQuantizationConfig

    if params.base_quantization == "nf4":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return PipelineQuantizationConfig(quant_mapping={family.denoiser_name: config})


def is_quantized(module: torch.nn.Module) -> bool:
    """Loaded by bitsandbytes: its weights cannot change dtype, and it already sits on its GPU."""
    return bool(getattr(module, "is_loaded_in_4bit", False) or getattr(module, "is_loaded_in_8bit", False))


def release_frozen(parts: Parts, mode: str, text_encoders_cached: bool) -> None:
    """After caching: the VAE, and the text encoders whose embeddings are cached, stay on the device
    (``none``), move to the CPU (``cpu``) or are dropped (``free``: nothing in the loop or the adapter
    save reads them). Trained text encoders (train_text_encoder) run every step and stay."""
    names = list(parts.text_encoders) if text_encoders_cached else []
    if mode == "none":
        return
    if mode == "cpu":
        parts.vae.to("cpu")
        for name in names:
            parts.text_encoders[name].to("cpu")
    elif mode == "free":
        parts.vae = None
        for name in names:
            del parts.text_encoders[name]
    else:
        raise ConfigError(f"train.offload_frozen {mode!r}: use 'none', 'cpu' or 'free'")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
