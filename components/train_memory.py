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
from components.families import Parts

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


def quantization_config(params: TrainParams, compute_dtype: torch.dtype):
    """diffusers' quantization config that loads the denoiser in NF4 or int8 (the frozen weights; LoRA
    layers added on top stay in float), or None for train.base_quantization 'none'."""
    if params.base_quantization == "none":
        return None
    from diffusers import BitsAndBytesConfig

    if params.base_quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def is_quantized(module: torch.nn.Module) -> bool:
    """Loaded by bitsandbytes: its weights cannot change dtype, and it already sits on its GPU."""
    return bool(getattr(module, "is_loaded_in_4bit", False) or getattr(module, "is_loaded_in_8bit", False))


class OneOnDevice:
    """Frozen modules (the VAE, the text encoders) that visit the device one at a time while the cache is
    built (train.offload_frozen cpu/free): ``bring`` sends the one on the device back to the CPU first.
    Text encoders are brought by a forward pre-hook, so a family's encode_prompts calls them in any order
    and T5 never shares the GPU with another frozen module; the VAE (its ``encode`` is not ``forward``)
    is brought by name. ``on_device`` names the one there now."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device, hooked: list[str]):
        self.modules, self.device, self.on_device = modules, device, None
        self._hooks = [modules[n].register_forward_pre_hook(self._pre_hook(n)) for n in hooked]

    def _pre_hook(self, name: str):
        return lambda module, args: self.bring(name)

    def bring(self, name: str) -> None:
        if self.on_device == name:
            return
        self.put_away()
        self.modules[name].to(self.device)
        self.on_device = name

    def put_away(self) -> None:
        if self.on_device is None:
            return
        self.modules[self.on_device].to("cpu")
        self.on_device = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next one reuses the memory; T5 alone is the phase's peak

    def close(self) -> None:
        self.put_away()
        for hook in self._hooks:
            hook.remove()


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
