"""Model families and the lookup from a model folder to its family (see base.py for the interface)."""

from __future__ import annotations

import json
from pathlib import Path

from components.errors import UnsupportedModel
from components.families.base import Family, Noised, Parts, TrainImage
from components.families.flux import Flux
from components.families.sd import StableDiffusion
from components.families.sd3 import StableDiffusion3
from components.families.sdxl import StableDiffusionXL

# One entry per family, matched by pipeline class against model_index.json's _class_name.
FAMILIES: tuple[Family, ...] = (StableDiffusion(), StableDiffusionXL(), Flux(), StableDiffusion3())

__all__ = ["FAMILIES", "Family", "Noised", "Parts", "TrainImage", "family_for", "family_named"]


def family_named(pipeline_class: str, where: str = "") -> Family:
    for family in FAMILIES:
        if family.pipeline == pipeline_class:
            return family
    supported = ", ".join(f.pipeline for f in FAMILIES)
    raise UnsupportedModel(
        f"{where or 'model'}: pipeline class {pipeline_class!r} is not a supported model family; "
        f"conceptlab trains {supported}"
    )


def family_for(model_dir: Path) -> Family:
    """The family of a diffusers model folder, from its model_index.json ``_class_name``."""
    index = Path(model_dir) / "model_index.json"
    if not index.is_file():
        raise UnsupportedModel(f"{model_dir}: no model_index.json, so not a diffusers pipeline folder")
    class_name = json.loads(index.read_text()).get("_class_name", "")
    return family_named(class_name, str(model_dir))


def family_of(pipe) -> Family:
    """The family of a loaded pipeline (generation gets a pipeline, not a folder)."""
    return family_named(type(pipe).__name__, type(pipe).__name__)
