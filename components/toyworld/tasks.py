"""The held-out concepts: colour + pattern + shape combinations the base model never saw as one
object. Each becomes a sample concept (a few photos and a class noun, the shape)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from components.toyworld.domain import COLOURS, POSITIONS, SIZES, ObjectSpec, render


@dataclass(frozen=True)
class ConceptTask:
    name: str
    colour: str
    pattern: str
    shape: str

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.colour, self.pattern, self.shape)

    def specs(self, count: int, seed: int) -> list[ObjectSpec]:
        """The object in varied sizes, places and backgrounds, as a person's photos of one thing vary."""
        rng = random.Random(seed)
        backgrounds = [c for c in COLOURS if c != self.colour]
        return [
            ObjectSpec(self.shape, self.colour, self.pattern, rng.choice(SIZES), rng.choice(POSITIONS), bg)
            for bg in rng.sample(backgrounds, min(count, len(backgrounds)))
        ]


CONCEPT_TASKS = (
    ConceptTask("toy-orange-star", "orange", "dotted", "star"),
    ConceptTask("toy-purple-triangle", "purple", "checkered", "triangle"),
    ConceptTask("toy-white-diamond", "white", "striped", "diamond"),
    # The purple triangle again, for the Taiyi-layout base (toyworld-taiyi), with Chinese prompts.
    ConceptTask("toy-zh-triangle", "purple", "checkered", "triangle"),
    # The purple checkered triangle again, on toyworld-flux (concepts/toy-flux-triangle).
    ConceptTask("toy-flux-triangle", "purple", "checkered", "triangle"),
)
HELD_OUT = frozenset(task.combo for task in CONCEPT_TASKS)


def write_photos(task: ConceptTask, out_dir: Path, count: int = 6, seed: int = 0, size: int = 64) -> list[Path]:
    """The task's instance photos as PNG files (64 px; curate scales them to the model's size)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i, spec in enumerate(task.specs(count, seed)):
        path = out_dir / f"{task.name}-{i}.png"
        render(spec, size, rng).save(path)
        paths.append(path)
    return paths
