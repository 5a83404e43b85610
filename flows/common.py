"""What every flow needs: the repository, a concept's config and layout, the registry URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import ResolvedConfig, load_config, load_params
from components.layout import ConceptLayout
from components.register import resolve_tracking_uri


@dataclass(frozen=True)
class ConceptContext:
    repo: Path
    cfg: ResolvedConfig
    layout: ConceptLayout
    tracking_uri: str


def concept_context(repo: str | Path, concept: str) -> ConceptContext:
    repo = Path(repo).resolve()
    cfg = load_config(repo / "concepts" / concept / "concept.yaml", repo / "params.yaml")
    uri = resolve_tracking_uri(cfg.params.registry.tracking_uri, repo)
    registry = cfg.params.registry.model_copy(update={"tracking_uri": uri})
    cfg = cfg.model_copy(update={"params": cfg.params.model_copy(update={"registry": registry})})
    return ConceptContext(repo=repo, cfg=cfg, layout=ConceptLayout(repo / "work", cfg.concept.name), tracking_uri=uri)


def listed_concepts(repo: str | Path) -> list[str]:
    return list(load_params(Path(repo) / "params.yaml").concepts)
