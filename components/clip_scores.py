"""CLIP embeddings and the scores built on them (open_clip; raw cosines, no rescaling).

CLIP-T: cosine(text, image) per generated image, with the prompt the image was made from.
CLIP-I: cosine between a generated image and each real instance image, averaged.
Diversity: 1 - cosine between images of one prompt at different seeds, averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch
from PIL import Image

from components.base_model import model_identity, resolve_model


@dataclass
class ClipScorer:
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str

    @classmethod
    def load(cls, ref: str) -> ClipScorer:
        import open_clip

        folder = resolve_model(ref)
        if not (folder / "open_clip_config.json").exists():
            raise FileNotFoundError(
                f"evaluate.clip_model {ref!r}: {folder} has no open_clip_config.json (open_clip's local-dir "
                f"format: the config plus open_clip_model.safetensors)"
            )
        spec = f"local-dir:{folder}"
        model, _, preprocess = open_clip.create_model_and_transforms(spec)
        return cls(model.eval(), preprocess, open_clip.get_tokenizer(spec), ref)

    def identity(self) -> dict[str, str]:
        return model_identity(self.name)

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_text(self.tokenizer(texts)).float(), dim=-1)

    def image_files(self, paths: list[Path]) -> torch.Tensor:
        return self.images([Image.open(p) for p in paths])


def clip_t(text_emb: torch.Tensor, image_emb: torch.Tensor) -> float:
    """Row-wise cosine: text i with image i."""
    return (text_emb * image_emb).sum(-1).mean().item()


def clip_i(image_emb: torch.Tensor, reference_emb: torch.Tensor) -> float:
    return (image_emb @ reference_emb.T).mean().item()


def paired_drift(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - cosine between images made from the same (prompt, seed) by two models."""
    return (1 - (a * b).sum(-1)).mean().item()


def diversity(image_emb: torch.Tensor, groups: list[list[int]]) -> float:
    """Mean over groups (one prompt, several seeds) of the mean 1 - cosine over the group's pairs."""
    means = [
        sum(1 - (image_emb[i] @ image_emb[j]).item() for i, j in pairs) / len(pairs)
        for pairs in (list(combinations(g, 2)) for g in groups)
        if pairs
    ]
    return sum(means) / len(means) if means else 0.0
