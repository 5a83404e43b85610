"""The base model's evaluation images, kept in a folder addressed by the hash of everything that draws
them (model content, prompts, seeds, sampler settings, resolution, the generating code and libraries).

Every evaluation draws the base model at the same (prompt, seed) pairs as the adapter. Those images do
not change between a concept's retrains, nor between a challenger's evaluation and the champion's
re-evaluation, so they are drawn once and read back after; PNG is lossless, so the scores are the same
as from freshly drawn ones. A folder is written under a temporary name and renamed when complete (the
first of two concurrent writers wins), so an interrupted or racing run is never read back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from components.config import GenerationParams
from components.io import sha256_json, write_json


def base_samples_inputs(
    model: dict[str, str],
    prompts: list[str],
    seeds: list[int],
    params: GenerationParams,
    resolution: int | tuple[int, int],
    device: str,
) -> dict:
    """What decides the base model's images; ``model`` is its model_identity(), ``device`` where and in
    which dtype the pipeline runs (a GPU's fp16 images are not the CPU's fp32 ones)."""
    from components.prior import generation_code_version

    return {
        "code": generation_code_version(),
        "model": model,
        "pairs": [[p, int(s)] for p, s in zip(prompts, seeds, strict=True)],
        "resolution": list(resolution) if isinstance(resolution, tuple) else resolution,
        "scheduler": params.scheduler,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "negative_prompt": params.negative_prompt,
        "device": device,
    }


def folder_for(root: Path, inputs: dict) -> Path:
    return root / sha256_json(inputs)[:16]


def read_base_samples(root: Path, inputs: dict) -> list[Image.Image] | None:
    """The images drawn before for these inputs, in (prompt, seed) order; None if never drawn here."""
    folder = folder_for(root, inputs)
    if not (folder / "inputs.json").exists():
        return None
    images = []
    for i in range(len(inputs["pairs"])):
        with Image.open(folder / f"{i:04d}.png") as image:
            images.append(image.convert("RGB"))
    return images


def store_base_samples(root: Path, inputs: dict, images: list[Image.Image]) -> Path:
    folder = folder_for(root, inputs)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}."))
    for i, image in enumerate(images):
        image.save(staging / f"{i:04d}.png")
    write_json(staging / "inputs.json", inputs)  # last: its presence marks a complete folder
    os.chmod(staging, 0o755)
    try:
        staging.rename(folder)
    except OSError:  # another process stored the same images first
        shutil.rmtree(staging, ignore_errors=True)
    return folder
