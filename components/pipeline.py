"""Runs one stage for one concept: resolves the config and the layout into a stage function's
arguments. The CLI, the DVC stages (through the CLI) and the flows all go through here, so each
stage is wired exactly once. Stage modules are imported inside each function: a DVC stage is one
CLI process, and `curate` should not pay for importing peft and diffusers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from components.base_model import native_resolution, resolve_model
from components.config import ResolvedConfig
from components.io import read_json, sha256_file, write_json
from components.layout import ConceptLayout

if TYPE_CHECKING:
    from components.caption import CaptionResult
    from components.curate import CurateResult
    from components.evaluate import EvalResult
    from components.prior import PriorResult
    from components.register import RegisterResult
    from components.train import TrainResult


def resolution(cfg: ResolvedConfig) -> int:
    return cfg.params.resolution or native_resolution(resolve_model(cfg.concept.base_model))


def run_curate(cfg: ResolvedConfig, layout: ConceptLayout) -> CurateResult:
    from components.buckets import bucket_counts
    from components.curate import curate

    result = curate(cfg.concept.photos, layout.curated, cfg.params.curate, resolution(cfg))
    # A file of its own (a DVC output): the priors follow the bucket counts, not every photo's pixels.
    counts = bucket_counts([e.bucket for e in result.entries if e.status == "accepted" and e.bucket])
    write_json(layout.buckets, {"buckets": [[w, h, n] for (w, h), n in counts]})
    return result


def run_caption(cfg: ResolvedConfig, layout: ConceptLayout) -> CaptionResult:
    from components.caption import caption

    return caption(layout.curated, layout.captions, cfg.params.caption, cfg.concept)


def run_prior(cfg: ResolvedConfig, layout: ConceptLayout) -> PriorResult:
    from components.prior import generate_priors

    c = cfg.concept
    return generate_priors(
        c.base_model,
        c.class_noun,
        cfg.params.prior,
        resolution(cfg),
        layout.priors_root,
        layout.prior,
        buckets=None if cfg.params.curate.aspect_buckets == "square" else instance_buckets(layout),
    )


def instance_buckets(layout: ConceptLayout) -> list[tuple[tuple[int, int], int]]:
    """The curated photos per aspect bucket (what curate wrote), for priors over the same buckets."""
    if not layout.buckets.exists():
        raise FileNotFoundError(
            f"{layout.buckets} is missing: with curate.aspect_buckets on, run the `curate` stage before `prior`"
        )
    return [((w, h), n) for w, h, n in read_json(layout.buckets)["buckets"]]


def prior_folder(layout: ConceptLayout) -> Path:
    if not (layout.prior / "manifest.json").exists():
        raise FileNotFoundError(f"{layout.prior / 'manifest.json'} is missing: run the `prior` stage first")
    return layout.prior


def run_train(cfg: ResolvedConfig, layout: ConceptLayout, resume: str = "no") -> TrainResult:
    from components.train import load_train_data, train

    use_prior = cfg.params.train.with_prior_preservation
    data = load_train_data(
        cfg.concept.base_model,
        resolution(cfg),
        layout.curated,
        layout.captions,
        prior_folder(layout) if use_prior else None,
    )
    return train(data, cfg.params.train, layout.adapter, layout.checkpoints, resume=resume)


def run_evaluate(
    cfg: ResolvedConfig, layout: ConceptLayout, adapter_dir: Path | None = None, out_dir: Path | None = None
) -> EvalResult:
    """Evaluates the concept's adapter (or another one, e.g. the champion's) against the base model."""
    from components.curate import CurateResult
    from components.evaluate import evaluate

    instance = CurateResult.read(layout.curated / "manifest.json").accepted_images(layout.curated)
    return evaluate(
        cfg.concept.base_model,
        adapter_dir or layout.adapter,
        instance,
        cfg.concept,
        cfg.params.evaluate,
        resolution(cfg),
        out_dir or layout.evaluation,
        layout.base_samples_root,
    )


def lineage(layout: ConceptLayout, repo: Path) -> dict[str, str]:
    """Hashes of the inputs that made the adapter, and the revision of ``repo`` (a folder in the
    concept's git repository), for the registry's lineage tags."""
    from components.register import git_commit

    out = {
        "git_commit": git_commit(repo),
        "curated_manifest_sha256": sha256_file(layout.curated / "manifest.json"),
        "captions_sha256": sha256_file(layout.captions / "captions.json"),
    }
    if (layout.prior / "manifest.json").exists():
        out["prior_key"] = read_json(layout.prior / "manifest.json")["key"]
    return out


def run_register(cfg: ResolvedConfig, layout: ConceptLayout) -> RegisterResult:
    from components.register import register, resolve_tracking_uri

    # Same rule as the flows: $MLFLOW_TRACKING_URI (a team server) wins over params.yaml.
    uri = resolve_tracking_uri(cfg.params.registry.tracking_uri, Path.cwd())
    registry = cfg.params.registry.model_copy(update={"tracking_uri": uri})
    # The concept file's repository names the revision, whichever folder the command runs from.
    result = register(
        cfg.concept, layout.adapter, layout.evaluation, registry, lineage(layout, cfg.concept_file.parent)
    )
    result.write(layout.registration)
    return result
