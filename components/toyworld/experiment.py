"""Concept-learning experiments on the toy world: one concept prepared once (curate, caption, class
priors), then any number of training variants, each evaluated with the project's own evaluate stage
and read back attribute by attribute with the domain CLIP. The quality tests and the toy-world
report (benchmarks/toyworld_quality.py) both run through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from components.config import ResolvedConfig, deep_merge, load_config, load_params
from components.layout import ConceptLayout
from components.toyworld.attributes import predict_attribute
from components.toyworld.domain import COLOURS, ObjectSpec
from components.toyworld.tasks import CONCEPT_TASKS, ConceptTask

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Prepared:
    cfg: ResolvedConfig
    layout: ConceptLayout
    task: ConceptTask


@dataclass
class Outcome:
    metrics: dict[str, float]  # the evaluate stage's metrics plus the attribute readouts below
    adapter_dir: Path
    eval_dir: Path


def prepare(concept: str, work_dir: Path, params_overrides: dict | None = None) -> Prepared:
    """Curate, caption and class priors for one of the shipped toy-world concepts; ``params_overrides``
    are merged over params.yaml and over the concept's own overrides."""
    import yaml

    from components.pipeline import run_caption, run_curate, run_prior

    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), params_overrides or {})
    params_file = work_dir / "params.yaml"
    work_dir.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(params))
    cfg = load_config(REPO / "concepts" / concept / "concept.yaml", params_file)
    # The experiment's overrides win over the concept's own (toy-zh-triangle sets its learning rate), so a
    # break on purpose such as learning rate 0 reaches every base.
    params = load_params(params_file, deep_merge(cfg.concept.overrides, params_overrides or {}))
    cfg = cfg.model_copy(update={"params": params})
    layout = ConceptLayout(work_dir / "work", concept)
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    if cfg.params.train.with_prior_preservation:
        run_prior(cfg, layout)
    task = next(t for t in CONCEPT_TASKS if t.name == concept)
    return Prepared(cfg, layout, task)


def train_variant(prep: Prepared, name: str, train_overrides: dict | None = None) -> Path:
    """Trains an adapter with the concept's params plus ``train_overrides``; returns its folder."""
    from components.pipeline import prior_folder, resolution
    from components.train import load_train_data, train

    params = prep.cfg.params.train.model_copy(update=train_overrides or {})
    data = load_train_data(
        prep.cfg.concept.base_model,
        resolution(prep.cfg),
        prep.layout.curated,
        prep.layout.captions,
        prior_folder(prep.layout) if params.with_prior_preservation else None,
    )
    root = prep.layout.root / "variants" / name
    train(data, params, root / "adapter", root / "checkpoints")
    return root / "adapter"


def evaluate_variant(prep: Prepared, adapter_dir: Path) -> Outcome:
    from components.clip_scores import ClipScorer
    from components.pipeline import run_evaluate

    eval_dir = adapter_dir.parent / "eval"
    result = run_evaluate(prep.cfg, prep.layout, adapter_dir=adapter_dir, out_dir=eval_dir)
    metrics = dict(result.adapter) | dict(result.metrics) | {f"base_{k}": v for k, v in result.base.items()}
    scorer = ClipScorer.load(prep.cfg.params.evaluate.clip_model)
    metrics |= concept_readout(prep, eval_dir, scorer)
    return Outcome(metrics, adapter_dir, eval_dir)


def concept_readout(prep: Prepared, eval_dir: Path, scorer) -> dict[str, float]:
    """For each evaluation prompt, the share of images in which the domain CLIP reads the concept's
    colour and pattern, and the background the prompt asked for (base and adapter); in the language
    the scorer reads (attributes.caption_for)."""
    params = prep.cfg.params.evaluate
    seeds = params.seeds
    out: dict[str, float] = {}
    for label in ("base", "adapter"):
        files = sorted((eval_dir / "samples").glob(f"{label}-*.png"))
        for p, template in enumerate(params.prompts):
            images = [Image.open(files[p * len(seeds) + s]) for s in range(len(seeds))]
            asked = asked_background(template)
            background = asked or "black"  # any value: the background is held fixed, not read, below
            specs = [
                ObjectSpec(prep.task.shape, prep.task.colour, prep.task.pattern, "large", "center", background)
            ] * len(images)
            emb = scorer.images(images)
            for attribute, want in (("colour", prep.task.colour), ("pattern", prep.task.pattern)):
                got = predict_attribute(scorer, emb, specs, attribute)
                out[f"{label}_p{p}_{attribute}"] = sum(g == want for g in got) / len(got)
            if asked:
                got = predict_attribute(scorer, emb, specs, "background")
                out[f"{label}_p{p}_background"] = sum(g == background for g in got) / len(got)
    return out


def asked_background(template: str) -> str | None:
    """The background colour a prompt asks for: the phrase the captions use for it (either language's
    dictionary: "on a green background", "绿色背景") found in the prompt, else None."""
    from components.toyworld.chinese import background_phrase

    for colour in COLOURS:
        if f"on a {colour} background" in template or background_phrase(colour) in template:
            return colour
    return None
