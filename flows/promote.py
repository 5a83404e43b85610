"""promote: the promotion gate as a flow. The challenger moves alias `champion` only if it passes."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from components import promote as gate
from components.io import write_json
from components.pipeline import run_evaluate
from flows.common import ConceptContext, concept_context
from flows.timing import span
from flows.train_concept import NETWORK_RETRIES


def _reevaluate(ctx: ConceptContext):
    """Evaluates the champion's adapter with this run's settings and instance images."""
    return lambda adapter_dir: run_evaluate(
        ctx.cfg, ctx.layout, adapter_dir, ctx.layout.root / "champion-reeval"
    ).model_dump(mode="json")


@task(cache_policy=NO_CACHE, **NETWORK_RETRIES)
def run_gate(ctx: ConceptContext) -> gate.GateVerdict:
    with span("gate"):
        return gate.promote(ctx.cfg.concept.name, ctx.tracking_uri, ctx.cfg.params.promotion, _reevaluate(ctx))


def gate_outcome(verdict: dict) -> str:
    """The gate's verdict in words: "promoted v3", "kept v3 (already champion)" or "refused v3 (failed: ...)"."""
    version = f"v{verdict['challenger_version']}"
    if verdict["promoted"]:
        return f"promoted {version}"
    if verdict["passed"]:
        return f"kept {version} (already champion)"
    failed = ", ".join(c["name"] for c in verdict["checks"] if not c["passed"])
    return f"refused {version} (failed: {failed})"


@flow(name="promote", log_prints=True)
def promote(concept: str, repo: str = ".") -> dict:
    ctx = concept_context(repo, concept)
    verdict = run_gate(ctx)
    write_json(ctx.layout.root / "promotion.json", verdict.model_dump(mode="json"))
    create_table_artifact(
        key=f"{concept.lower()}-gate",
        table=[
            {
                "check": c.name,
                "passed": c.passed,
                "estimate": round(c.interval.mean, 4) if c.interval else None,
                "low": round(c.interval.low, 4) if c.interval else None,
                "high": round(c.interval.high, 4) if c.interval else None,
                "detail": c.detail,
            }
            for c in verdict.checks
        ],
        description=f"promotion gate for v{verdict.challenger_version} against {verdict.reference}",
    )
    verdict = verdict.model_dump(mode="json")
    outcome = gate_outcome(verdict)
    get_run_logger().info("%s: %s", concept, outcome)
    # The message is the outcome: a train-concept run that started this one through its deployment
    # reads it from the Prefect API (no shared result storage).
    return Completed(message=outcome, data=verdict)
