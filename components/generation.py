"""Seeded, batched text-to-image generation shared by the prior and evaluate stages.

Each image has its own torch.Generator seeded with its own seed, so an image depends on its
(prompt, seed) pair only, not on the batch it happened to be generated in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from components.config import GenerationParams


def set_scheduler(pipe, name: str) -> None:
    """Swaps the sampler, as the pipeline's model family allows (keeping its noise schedule)."""
    from components.families import family_of

    family_of(pipe).set_sampler(pipe, name)


def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    params: GenerationParams,
    resolution: int | tuple[int, int],
    progress=None,
) -> list[Image.Image]:
    """One image per (prompt, seed) pair, in order; batches of ``params.batch_size``. ``resolution``:
    the side of a square, or (width, height)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    from components.families import family_of

    set_scheduler(pipe, params.scheduler)
    family = family_of(pipe)
    device = pipe.device.type
    width, height = resolution if isinstance(resolution, tuple) else (resolution, resolution)
    images: list[Image.Image] = []
    for start in range(0, len(prompts), params.batch_size):
        batch_prompts = list(prompts[start : start + params.batch_size])
        batch_seeds = seeds[start : start + params.batch_size]
        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in batch_seeds]
        guidance = family.guidance_kwargs(pipe, params.guidance_scale, params.negative_prompt, len(batch_prompts))
        with torch.no_grad():
            out = pipe(
                batch_prompts,
                num_inference_steps=params.steps,
                **guidance,
                height=height,
                width=width,
                generator=generators,
            )
        images.extend(out.images)
        if progress is not None:
            progress(len(batch_prompts))
    return images
