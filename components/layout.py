"""Where each stage writes, for one concept under one work folder. One place, so the CLI, DVC and
the flows agree on paths without repeating them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConceptLayout:
    work_dir: Path
    concept: str

    @property
    def root(self) -> Path:
        return self.work_dir / self.concept

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    @property
    def buckets(self) -> Path:
        """How many curated photos each aspect bucket holds: what the class priors follow."""
        return self.root / "buckets.json"

    @property
    def captions(self) -> Path:
        return self.root / "captions"

    @property
    def prior(self) -> Path:
        """This concept's class images (hard links into the shared folder below): what DVC versions."""
        return self.root / "prior"

    @property
    def priors_root(self) -> Path:
        """Shared, content-addressed class-prior folders: a local cache reused by every concept."""
        return self.work_dir / "priors"

    @property
    def base_samples_root(self) -> Path:
        """Shared, content-addressed base-model evaluation images: a local cache reused by every evaluation."""
        return self.work_dir / "base-samples"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def evaluation(self) -> Path:
        return self.root / "eval"

    @property
    def registration(self) -> Path:
        return self.root / "registered.json"
