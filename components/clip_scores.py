"""CLIP embeddings and the scores built on them (open_clip, or transformers' ChineseCLIPModel for a
Chinese-reading CLIP; raw cosines, no rescaling).

CLIP-T: cosine(text, image) per generated image, with the prompt the image was made from.
CLIP-I: cosine between a generated image and each real instance image, averaged.
Diversity: 1 - cosine between images of one prompt at different seeds, averaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch
from PIL import Image

from components.base_model import model_identity, resolve_model
from components.languages import clip_languages


@dataclass
class ClipScorer:
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str
    languages: frozenset[str] = frozenset()

    @classmethod
    def load(cls, ref: str) -> ClipScorer:
        import open_clip

        folder = resolve_model(ref)
        languages = frozenset(clip_languages(folder))
        if _is_chinese_clip(folder):
            return cls(*_load_chinese_clip(folder), ref, languages)
        if not (folder / "open_clip_config.json").exists():
            raise FileNotFoundError(
                f"evaluate.clip_model {ref!r}: {folder} has no open_clip_config.json (open_clip's local-dir "
                f"format: the config plus open_clip_model.safetensors) and is not a ChineseCLIPModel folder"
            )
        spec = f"local-dir:{folder}"
        model, _, preprocess = open_clip.create_model_and_transforms(spec)
        return cls(model.eval(), preprocess, open_clip.get_tokenizer(spec), ref, languages)

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


def _is_chinese_clip(folder: Path) -> bool:
    config = folder / "config.json"
    return config.exists() and json.loads(config.read_text()).get("model_type") == "chinese_clip"


class _ChineseClipTowers(torch.nn.Module):
    """ChineseCLIPModel behind open_clip's two calls, so the scorer is one code path."""

    def __init__(self, model):
        super().__init__()
        self.clip = model

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return hf_features(self.clip.get_image_features(pixel_values=pixels))

    def encode_text(self, batch) -> torch.Tensor:
        return hf_features(self.clip.get_text_features(**batch))


def hf_features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _load_chinese_clip(folder: Path):
    """A ChineseCLIPModel folder (save_pretrained of the model and its ChineseCLIPProcessor), as
    OFA-Sys/chinese-clip-* ship."""
    from transformers import ChineseCLIPModel, ChineseCLIPProcessor

    model = ChineseCLIPModel.from_pretrained(folder).eval()
    processor = ChineseCLIPProcessor.from_pretrained(folder)

    def preprocess(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt").pixel_values[0]

    def tokenize(texts: list[str]):
        return processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")

    return _ChineseClipTowers(model), preprocess, tokenize


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
