"""Rectified-flow training math shared by the flow-matching families (Flux.1, SD3/3.5), as pure functions.

The model sees x_t = (1 - s) x0 + s noise at a noise level s in [0, 1] and predicts the velocity
noise - x0; the samplers (FlowMatchEulerDiscreteScheduler) integrate that velocity from s = 1 to 0.
Training noise levels are drawn from a density on (0, 1) (uniform, or the SD3 paper's logit-normal or mode) and
then shifted towards noise exactly as the model's own scheduler shifts them at inference: SD3 by its fixed
``shift``, FLUX.1-dev by exp(mu) with mu growing with the image's token count (``use_dynamic_shifting``).
Noise levels are continuous (as in the SD3 paper and BFL's trainer), not drawn from the 1000 discrete
training timesteps as diffusers' example scripts do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

Density = Literal["uniform", "logit_normal", "mode"]

FLUX_TRAIN_GUIDANCE = 3.5
"""The guidance value FLUX.1-dev's guidance embedding sees while training (diffusers' and kohya's default)."""


def sample_noise_levels(
    batch: int,
    generator: torch.Generator,
    density: Density = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
) -> torch.Tensor:
    """Unshifted noise levels u in (0, 1), drawn from ``generator`` (diffusers' SD3 density helper):
    logit_normal: sigmoid(N(logit_mean, logit_std)); mode: 1 - v - mode_scale·(cos²(πv/2) - 1 + v) for a
    uniform v (mode_scale 0 is uniform; larger ones favour the middle)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    if density not in ("uniform", "logit_normal", "mode"):
        raise ValueError(f"unknown noise-level density {density!r}; use 'uniform', 'logit_normal' or 'mode'")
    if density == "mode":
        return mode_density(torch.rand(batch, generator=generator), mode_scale)
    return compute_density_for_timestep_sampling(
        weighting_scheme=density if density != "uniform" else "none",
        batch_size=batch,
        logit_mean=logit_mean,
        logit_std=logit_std,
        mode_scale=mode_scale,
        generator=generator,
    )


def mode_density(v: torch.Tensor, scale: float) -> torch.Tensor:
    """The SD3 paper's mode sampling: uniform v -> 1 - v - scale·(cos²(πv/2) - 1 + v)."""
    return 1 - v - scale * (torch.cos(math.pi * v / 2) ** 2 - 1 + v)


def shift_noise_levels(u: torch.Tensor, shift: float) -> torch.Tensor:
    """s = shift·u / (1 + (shift - 1)·u): shift > 1 spends more steps at high noise.

    The same map as the scheduler's fixed shift and, with shift = exp(mu), its exponential time shift;
    written without 1/u so u = 0 stays 0.
    """
    return shift * u / (1 + (shift - 1) * u)


def scheduler_shift(scheduler_config: Mapping, image_seq_len: int) -> float:
    """The shift the model's scheduler applies at inference for an image of ``image_seq_len`` tokens."""
    if scheduler_config.get("use_dynamic_shifting", False):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        mu = calculate_shift(
            image_seq_len,
            scheduler_config.get("base_image_seq_len", 256),
            scheduler_config.get("max_image_seq_len", 4096),
            scheduler_config.get("base_shift", 0.5),
            scheduler_config.get("max_shift", 1.15),
        )
        return math.exp(mu)
    return float(scheduler_config.get("shift", 1.0))


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - s)·x0 + s·noise, one s per batch row."""
    s = sigmas.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_t / d s = noise - x0: what the transformer predicts."""
    return noise - x0


def normalize_latents(latents: torch.Tensor, vae_config: Mapping) -> torch.Tensor:
    """VAE latents as the transformer sees them: (z - shift_factor)·scaling_factor (the pipelines undo it)."""
    shift = vae_config.get("shift_factor") or 0.0
    return (latents - shift) * vae_config["scaling_factor"]


# Flux: latents enter the transformer as a sequence of 2x2 patches, with 3-axis position ids.
def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[b, c, h, w] -> [b, (h/2)(w/2), 4c], FluxPipeline's own packing."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def unpack_latents(packed: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """Inverse of ``pack_latents`` (FluxPipeline's, with the VAE factor folded out: sizes in latent pixels)."""
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(packed, latent_height, latent_width, vae_scale_factor=1)


def latent_image_ids(latent_height: int, latent_width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[(h/2)(w/2), 3] position ids (0, row, col) of the packed patches, FluxPipeline's own."""
    from diffusers import FluxPipeline

    return FluxPipeline._prepare_latent_image_ids(None, latent_height // 2, latent_width // 2, device, dtype)


def text_ids(seq_len: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Flux's text position ids: all zero, as FluxPipeline.encode_prompt makes them."""
    return torch.zeros(seq_len, 3, device=device, dtype=dtype)


def guidance_input(transformer_config: Mapping, batch: int, scale: float = FLUX_TRAIN_GUIDANCE) -> torch.Tensor | None:
    """The guidance embedding's input for guidance-distilled models (FLUX.1-dev); None for schnell."""
    if not transformer_config.get("guidance_embeds", False):
        return None
    return torch.full((batch,), float(scale), dtype=torch.float32)
