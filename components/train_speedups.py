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

# Steps from which compiling the denoiser pays back its compile time, per device type; compile 'auto' is on
# from there. CPU, measured by benchmarks/train_speed.py on 2 quiet cores (2026-12-03, toyworld-sd, 2
# threads): 32 px 1.50x per step for 53 s of cold compiling (0.012 s saved a step: break-even ~4,400 steps),
# 128 px 1.10x for 74 s (0.027 s a step: ~2,700 steps). The larger wins at both sizes. A DreamBooth run is
# hundreds of steps, so 'auto' leaves it off; a warm inductor cache (a retrain of the same model and shapes
# on the same machine) compiles in under a second, where `compile: true` pays from the first steps.
COMPILE_BREAK_EVEN_STEPS: dict[str, int] = {"cpu": 4400}


def apply_threads(params: TrainParams) -> None:
    """torch's intra-op and inter-op thread counts; 'auto' leaves torch's own choice (the physical cores)."""
    if params.num_threads != "auto":
        torch.set_num_threads(params.num_threads)
    if params.interop_threads != "auto" and params.interop_threads != torch.get_num_interop_threads():
        # settable once per process, before any inter-op work: a later run in the same process keeps the first
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(params.interop_threads)


def use_compile(params: TrainParams, device: torch.device) -> bool:
    """compile 'auto': on only where max_steps reaches the measured break-even for this device type."""
    if params.compile != "auto":
        return params.compile
    break_even = COMPILE_BREAK_EVEN_STEPS.get(device.type)
    return break_even is not None and params.max_steps >= break_even


def prepare_denoiser(denoiser: torch.nn.Module, params: TrainParams) -> None:
    """Attention processor and memory format, in place (before accelerate wraps the module)."""
    if params.attention != "sdpa" and hasattr(denoiser, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor

        denoiser.set_attn_processor(AttnProcessor())
    if params.channels_last:
        denoiser.to(memory_format=torch.channels_last)


def compiled(denoiser: torch.nn.Module) -> torch.nn.Module:
    """The denoiser's forward compiled in place (its parameters and state dict keys stay as they are)."""
    # Static shapes: a run sees a handful of batch shapes, each compiled once. Dynamic shapes (torch's choice
    # on the first recompile) failed inside inductor at 128 px ("cannot determine truth value of Relational").
    denoiser.compile(dynamic=False)
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
