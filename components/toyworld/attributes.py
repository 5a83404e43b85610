"""Reading attributes off images with the domain CLIP: for each attribute, the caption with the true
value competes against the same caption with every other value (all else equal); the best wins.

Used twice: the CLIP's zero-shot accuracy on rendered images, and how well the base model's
images follow their prompts (a prompt's attributes read back from the image it produced).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from components.toyworld.domain import COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES, ObjectSpec

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "pattern": PATTERNS,
    "size": SIZES,
    "position": POSITIONS,
    "background": tuple(COLOURS),
}


def caption_for(scorer) -> Callable[[ObjectSpec], str]:
    """The domain's captions in a language the scorer's text tower reads: English, else Chinese."""
    if "en" in scorer.languages or not scorer.languages:
        return ObjectSpec.caption
    from components.toyworld.chinese import chinese_caption

    return chinese_caption


def predict_attribute(scorer, image_emb: torch.Tensor, specs: list[ObjectSpec], attribute: str) -> list[str]:
    """The value of ``attribute`` CLIP reads from each image, the other attributes held at ``specs``."""
    values = ATTRIBUTES[attribute]
    caption = caption_for(scorer)
    texts = [caption(replace(spec, **{attribute: value})) for spec in specs for value in values]
    text_emb = scorer.texts(texts).view(len(specs), len(values), -1)
    best = torch.einsum("nd,nvd->nv", image_emb, text_emb).argmax(-1)
    return [values[i] for i in best.tolist()]


def attribute_accuracy(scorer, image_emb: torch.Tensor, specs: list[ObjectSpec]) -> dict[str, float]:
    """Share of images whose attribute CLIP reads as the spec's, per attribute."""
    out = {}
    for attribute in ATTRIBUTES:
        predicted = predict_attribute(scorer, image_emb, specs, attribute)
        out[attribute] = sum(p == getattr(s, attribute) for p, s in zip(predicted, specs, strict=True)) / len(specs)
    return out


def chance_levels() -> dict[str, float]:
    return {name: 1 / len(values) for name, values in ATTRIBUTES.items()}
