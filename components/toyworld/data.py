"""The toy world as training tensors: images rendered at 64 px and scaled to the model's 32 px
(the same LANCZOS scaling curate applies to a concept's photos), with their captions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from components.toyworld.domain import ObjectSpec, dataset, partial_caption
from components.toyworld.tasks import HELD_OUT

RESOLUTION = 32


@dataclass
class WorldData:
    pixels: torch.Tensor  # uint8, N x 3 x 32 x 32
    captions: list[str]  # every attribute stated
    partial_captions: list[str]  # some attributes left out, for training on short prompts too
    specs: list[ObjectSpec]

    def training_captions(self, tokenizer, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of the full and the partial captions; trainers pick one of the two per sample."""

        def ids(texts: list[str]) -> torch.Tensor:
            return tokenizer(
                texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
            ).input_ids

        return ids(self.captions), ids(self.partial_captions)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], as the VAE takes them."""
        return self.pixels[index].float() / 127.5 - 1.0


def world_data(count: int, seed: int, exclude=HELD_OUT) -> WorldData:
    items = dataset(count, seed, size=2 * RESOLUTION, exclude=exclude)
    arrays = [np.asarray(img.resize((RESOLUTION, RESOLUTION), Image.Resampling.LANCZOS)) for img, _, _ in items]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    rng = random.Random(seed + 1)
    specs = [s for _, _, s in items]
    return WorldData(pixels, [c for _, c, _ in items], [partial_caption(s, rng) for s in specs], specs)


def pick_captions(full: torch.Tensor, partial: torch.Tensor, index: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half full captions, half partial ones."""
    use_partial = torch.rand(len(index), generator=gen) < 0.5
    return torch.where(use_partial[:, None], partial[index], full[index])


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] tensors back to PIL images."""
    arr = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
