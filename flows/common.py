"""What every flow needs: the repository, a concept's config and layout, the registry URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from components.config import ConfigError, ResolvedConfig, load_config, load_params
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


def list_concept(repo: str | Path, concept: str) -> bool:
    """Adds ``concept`` to params.yaml `concepts` unless it is there; True if it was added.

    dvc.yaml declares each stage once, with `foreach: ${concepts}`: a concept DVC is to run must be in
    that list (DVC cannot loop over folders). The list is edited in place as text, one line (or the
    `[...]` list) changed, so the file's comments, quoting and layout stay as the person wrote them.
    """
    params_file = Path(repo) / "params.yaml"
    text = params_file.read_text(encoding="utf-8")
    listed = load_params(params_file).concepts
    if concept in listed:
        return False
    root = yaml.compose(text)
    node = next((v for k, v in (root.value if root else []) if k.value == "concepts"), None)
    if node is None:
        text = text.rstrip("\n") + f"\nconcepts: [{concept}]\n"
    elif node.flow_style or not node.value:  # `concepts: []` or `concepts: [a, b]`
        flow = "[" + ", ".join([*listed, concept]) + "]"
        text = text[: node.start_mark.index] + flow + text[node.end_mark.index :]
    else:  # a block list: one more `- item` line after the last, at the list's indentation
        end = text.find("\n", node.value[-1].end_mark.index)
        end = len(text) if end < 0 else end
        text = text[:end] + "\n" + " " * node.start_mark.column + f"- {concept}" + text[end:]
    if yaml.safe_load(text).get("concepts") != [*listed, concept]:
        raise ConfigError(f"{params_file}: could not add {concept!r} to key 'concepts'; add it by hand")
    params_file.write_text(text, encoding="utf-8")
    return True
