"""Markdown and table artifacts for the Prefect UI."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.descriptions import is_server, run_artifact_link
from components.register import evaluation_run_id


def champion_metrics(tracking_uri: str, model_name: str) -> tuple[str | None, dict[str, float]]:
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None, {}
    return str(version.version), client.get_run(evaluation_run_id(version)).data.metrics


def metrics_rows(ctx, evaluation) -> list[dict]:
    """Challenger, base and champion means; for the gated numbers the change from the base model with
    the gate's interval (paired over the evaluation's (prompt, seed) pairs)."""
    from components.promote import intervals_vs_base

    version, champion = champion_metrics(ctx.tracking_uri, ctx.cfg.concept.name)
    samples = [s.model_dump() for s in evaluation.samples]
    intervals = intervals_vs_base(samples, ctx.cfg.params.promotion) if samples else {}
    rows = []
    for name in ("clip_i", "clip_t", "diversity", "prior_drift"):
        rows.append(
            {
                "metric": name,
                "challenger": round(evaluation.metrics[name], 4),
                "base": round(evaluation.base[name], 4) if name in evaluation.base else None,
                f"champion (v{version})" if version else "champion": round(champion[name], 4)
                if name in champion
                else None,
                "vs base (interval)": f"{intervals[name].mean:+.4f} {intervals[name].text()}"
                if name in intervals
                else None,
            }
        )
    return rows


def report_link(ctx, registration) -> str:
    """report.html where a colleague can open it: the evaluation run's artifact in the MLflow UI of a
    tracking server (which renders .html), or the workspace file when MLflow is local."""
    if is_server(registration.tracking_uri):
        run = MlflowClient(tracking_uri=registration.tracking_uri).get_run(registration.eval_run_id)
        return run_artifact_link(registration.tracking_uri, run, "evaluation/report.html")
    return (ctx.layout.evaluation / "report.html").resolve().as_uri()


def report_markdown(ctx, evaluation, registration, report) -> str:
    rows = "\n".join(
        f"| {r['metric']} | {r['challenger']} | {r['base']} | {r['vs base (interval)'] or ''} |"
        for r in metrics_rows(ctx, evaluation)
    )
    return f"""# {ctx.cfg.concept.name}: model version {registration.version} (`{registration.alias}`)

DVC ran: {", ".join(report.ran) or "nothing (all stages unchanged)"}; skipped: {", ".join(report.skipped) or "none"}.

| metric | adapter | base | change (drift) vs base, gate's interval |
|---|---|---|---|
{rows}

- **[Evaluation report (report.html): numbers, grid and every sample]({report_link(ctx, registration)})**
- Registry: `{registration.model_uri}` (run `{registration.run_id}`, evaluation run `{registration.eval_run_id}`) at `{registration.tracking_uri}`
- Report: `{ctx.layout.evaluation / "report.md"}`, grid `{ctx.layout.evaluation / "grid.png"}`
"""
