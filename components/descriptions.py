"""MLflow's own description fields, so the registry reads well without opening tags.

The registered model says what the concept is; each model version says, in one line, the gate's
verdict with its numbers (or its evaluation and "not yet gated") and links its grid. The
`gate.*` and `conceptlab.*` tags stay: code reads them; the registry view shows them cut short.
Functions take an MlflowClient (no import of mlflow here) and write only when the text changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

GATED_CHECKS = ("learned", "clip_i", "clip_t", "prior_drift")


class CheckLike(Protocol):
    name: str
    passed: bool
    detail: str


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def run_artifact_link(tracking_uri: str, run, path: str) -> str:
    """Where a person opens a run's artifact: its page in the MLflow UI of a tracking server (which
    renders .png and .html), else the artifact's own URI (a local path or s3://...)."""
    if is_server(tracking_uri):
        return (
            f"{tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/{path}"
        )
    return f"{run.info.artifact_uri.rstrip('/')}/{path}"


def model_description(concept, base: dict, accepted_photos: int, version: str) -> str:
    revision = f", revision {base['revision']}" if base.get("revision") else ""
    return (
        f"{concept.name}: one particular {concept.class_noun}, learned as a DreamBooth LoRA adapter. "
        f'Prompt it as "{concept.instance_phrase}" (identifier `{concept.instance_token}`, '
        f"class noun `{concept.class_noun}`). Base model {base['name']} (sha256 {base['sha256'][:12]}{revision}). "
        f"Challenger v{version} learned it from {accepted_photos} accepted photos. "
        "Aliases: `challenger` = the latest registration, `champion` = passed the promotion gate."
    )


def evaluation_summary(metrics: dict[str, float]) -> str:
    m = {k: metrics.get(k, float("nan")) for k in ("clip_i", "clip_i_gain", "clip_t", "prior_drift")}
    return (
        f"CLIP-I {m['clip_i']:.4f} (gain {m['clip_i_gain']:+.4f} over the base model), "
        f"CLIP-T {m['clip_t']:.4f}, prior drift {m['prior_drift']:.4f}"
    )


def pending_version_description(metrics: dict[str, float], grid: str) -> str:
    return f"Not yet gated · {evaluation_summary(metrics)}. Grid: {grid}"


def gated_version_description(
    checks: Iterable[CheckLike],
    promoted: bool,
    reference: str,
    metrics: dict[str, float],
    grid: str,
) -> str:
    """One line: verdict and outcome first (the registry's version table shows 32 characters), then
    every check with its numbers (✓/✗), then the grid's link."""
    checks = list(checks)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        head = f"REFUSED (failed {', '.join(failed)}) vs {reference}"
    elif promoted:
        head = f"PASSED → champion (vs {reference})"
    else:
        head = f"PASSED, already champion (vs {reference})"
    text = f"{head}: " + "; ".join(f"{'✓' if c.passed else '✗'} {c.detail}" for c in checks)
    if not any(c.name in GATED_CHECKS for c in checks):  # no numbers in the checks: state them
        text += f" · {evaluation_summary(metrics)}"
    return f"{text}. Grid: {grid}"


def set_model_description(client, name: str, text: str) -> None:
    if (client.get_registered_model(name).description or "") != text:
        client.update_registered_model(name, description=text)


def set_version_description(client, name: str, version: str, text: str) -> None:
    if (client.get_model_version(name, version).description or "") != text:
        client.update_model_version(name, version, description=text)
