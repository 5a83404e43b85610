"""Speed options of the training step (train: compile, optimizer_impl, channels_last, attention, num_threads,
interop_threads), applied to the denoiser and the optimiser before the loop. Each was measured side by side
by benchmarks/train_speed.py (results and README table there); the defaults are the ones that paid.

None of them changes what is drawn at each step, so a resumed run equals an uninterrupted one bit for bit when
both run with the same options. They may round differently from one another (another kernel, another summation
order), so they are part of the run's inputs: a checkpoint made under other speed options is not resumed."""

from __future__ import annotations

import contextlib

import torch

from components.config import TrainParams

# Measured by benchmarks/train_speed.py (device type -> (compile seconds, fraction of a step saved)).
# Where a device is missing or the fraction is <= 0, compile 'auto' stays off.
COMPILE_MEASURED: dict[str, tuple[float, float]] = {"cpu": (60.0, -0.05)}


def apply_threads(params: TrainParams) -> None:
    """torch's intra-op and inter-op thread counts; 'auto' leaves torch's own choice (the physical cores)."""
    if params.num_threads != "auto":
        torch.set_num_threads(params.num_threads)
    if params.interop_threads != "auto" and params.interop_threads != torch.get_num_interop_threads():
        # settable once per process, before any inter-op work: a later run in the same process keeps the first
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(params.interop_threads)


def use_compile(params: TrainParams, device: torch.device) -> bool:
    """compile 'auto': on only where the measured per-step saving over max_steps exceeds the compile time."""
    if params.compile != "auto":
        return params.compile
    compile_s, saved_fraction = COMPILE_MEASURED.get(device.type, (0.0, 0.0))
    if saved_fraction <= 0:
        return False
    step_s = 0.1 if device.type == "cpu" else 0.2  # a conservative typical step; the saving scales with it
    return params.max_steps * step_s * saved_fraction > compile_s


def prepare_denoiser(denoiser: torch.nn.Module, params: TrainParams) -> None:
    """Attention processor and memory format, in place (before accelerate wraps the module)."""
    if params.attention != "sdpa" and hasattr(denoiser, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor

        denoiser.set_attn_processor(AttnProcessor())
    if params.channels_last:
        denoiser.to(memory_format=torch.channels_last)


def compiled(denoiser: torch.nn.Module) -> torch.nn.Module:
    """The denoiser's forward compiled in place (its parameters and state dict keys stay as they are)."""
    denoiser.compile()
    return denoiser


def adamw_kwargs(params: TrainParams) -> dict:
    """torch AdamW's implementation: 'for_loop' (torch's CPU default), 'foreach' or 'fused'."""
    if params.optimizer_impl == "fused":
        return {"fused": True}
    if params.optimizer_impl == "foreach":
        return {"foreach": True}
    if params.optimizer_impl == "for_loop":
        return {"foreach": False}
    return {}
