"""promote: the promotion gate as a flow. The challenger moves alias `champion` only if it passes."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from components import promote as gate
from components.curate import CurateResult
from components.evaluate import evaluate
from components.io import write_json
from components.pipeline import resolution
from flows.common import ConceptContext, concept_context
from flows.train_concept import NETWORK_RETRIES


def _reevaluate(ctx: ConceptContext):
    """Evaluates another adapter (the champion's) with this run's settings and instance images."""

    def run(adapter_dir: Path) -> dict[str, float]:
        instance = CurateResult.read(ctx.layout.curated / "manifest.json").accepted_images(ctx.layout.curated)
        out = ctx.layout.root / "champion-reeval"
        result = evaluate(
            ctx.cfg.concept.base_model,
            adapter_dir,
            instance,
            ctx.cfg.concept,
            ctx.cfg.params.evaluate,
            resolution(ctx.cfg),
            out,
        )
        return result.metrics

    return run


@task(cache_policy=NO_CACHE, **NETWORK_RETRIES)
def run_gate(ctx: ConceptContext) -> gate.GateVerdict:
    return gate.promote(ctx.cfg.concept.name, ctx.tracking_uri, ctx.cfg.params.promotion, _reevaluate(ctx))


@flow(name="promote", log_prints=True)
def promote(concept: str, repo: str = ".") -> dict:
    ctx = concept_context(repo, concept)
    verdict = run_gate(ctx)
    write_json(ctx.layout.root / "promotion.json", verdict.model_dump(mode="json"))
    create_table_artifact(
        key=f"{concept.lower()}-gate",
        table=[{"check": c.name, "passed": c.passed, "detail": c.detail} for c in verdict.checks],
        description=f"promotion gate for v{verdict.challenger_version} against {verdict.reference}",
    )
    outcome = "promoted to champion" if verdict.promoted else ("kept" if verdict.passed else "refused")
    get_run_logger().info("%s v%s: %s", concept, verdict.challenger_version, outcome)
    return verdict.model_dump(mode="json")
