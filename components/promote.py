"""promote: the gate that moves the registry alias `champion` to the challenger, or refuses.

The challenger is compared with the current champion, or with the base model when there is no
champion, on the same evaluation prompts and seeds (a champion evaluated with other settings is
evaluated again with the challenger's before the comparison). The verdict and its numbers are
written as model-version tags and, in one line, as the version's description. Moving an alias is
one registry update, so a failure at any point leaves exactly one champion (the old one) or none if
there never was one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from components import descriptions
from components.config import PromotionParams
from components.io import StageResult
from components.register import evaluation_run_id

CHALLENGER, CHAMPION = "challenger", "champion"
GATED = ("clip_i", "clip_t", "prior_drift", "clip_i_gain")


class Check(BaseModel):
    name: str
    passed: bool
    detail: str


class GateVerdict(StageResult):
    model_name: str
    challenger_version: str
    reference: Literal["champion", "base", "self"]
    champion_version: str | None
    passed: bool
    promoted: bool
    checks: list[Check]
    challenger: dict[str, float]
    reference_metrics: dict[str, float]


def decide(challenger: dict[str, float], reference: dict[str, float], rule: PromotionParams) -> list[Check]:
    """The rule, as data: one check per metric, each with the numbers that decided it."""
    ci, ct, drift, gain = (challenger[k] for k in ("clip_i", "clip_t", "prior_drift", "clip_i_gain"))
    return [
        Check(
            name="learned",
            passed=gain >= rule.min_clip_i_gain,
            detail=f"CLIP-I gain over the base model {gain:+.4f} (at least {rule.min_clip_i_gain})",
        ),
        Check(
            name="clip_i",
            passed=ci >= reference["clip_i"] - rule.clip_i_margin,
            detail=f"CLIP-I {ci:.4f} vs reference {reference['clip_i']:.4f} (margin {rule.clip_i_margin})",
        ),
        Check(
            name="clip_t",
            passed=ct >= reference["clip_t"] - rule.clip_t_margin,
            detail=f"CLIP-T {ct:.4f} vs reference {reference['clip_t']:.4f} (margin {rule.clip_t_margin})",
        ),
        Check(
            name="prior_drift",
            passed=drift <= rule.max_prior_drift,
            detail=f"prior drift {drift:.4f} (at most {rule.max_prior_drift})",
        ),
    ]


def _run_metrics(client, version) -> dict[str, float]:
    """The metrics of the version's current evaluation (a re-evaluated adapter points at a newer run)."""
    return client.get_run(evaluation_run_id(version)).data.metrics


def _eval_settings(client, version) -> str | None:
    tag = "conceptlab.eval_settings_sha256"
    return version.tags.get(tag) or client.get_run(evaluation_run_id(version)).data.tags.get(tag)


def promote(
    model_name: str,
    tracking_uri: str,
    rule: PromotionParams,
    reevaluate: Callable[[Path], dict[str, float]] | None = None,
) -> GateVerdict:
    """Gates the version that holds alias `challenger`.

    ``reevaluate(adapter_dir) -> adapter metrics`` is called for a champion whose evaluation settings
    differ from the challenger's; without it such a champion is a refusal (numbers not comparable).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    challenger = client.get_model_version_by_alias(model_name, CHALLENGER)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        champion = None
    c_metrics = _run_metrics(client, challenger)
    challenger_numbers = {k: c_metrics[k] for k in GATED}

    if champion is not None and champion.version == challenger.version:
        reference, ref_numbers = "self", challenger_numbers
        checks = [Check(name="already_champion", passed=True, detail=f"v{challenger.version} is the champion")]
    elif champion is None:
        reference = "base"
        ref_numbers = {
            "clip_i": c_metrics["base_clip_i"],
            "clip_t": c_metrics["base_clip_t"],
            "prior_drift": 0.0,
            "clip_i_gain": 0.0,
        }
        checks = decide(challenger_numbers, ref_numbers, rule)
    else:
        reference = "champion"
        ref_numbers, comparable = _champion_numbers(client, tracking_uri, model_name, champion, challenger, reevaluate)
        checks = (
            decide(challenger_numbers, ref_numbers, rule)
            if comparable
            else [
                Check(
                    name="comparable",
                    passed=False,
                    detail="the champion was evaluated with other settings and could not be re-evaluated",
                )
            ]
        )

    passed = all(c.passed for c in checks)
    promoted = passed and reference != "self"
    _record(client, model_name, challenger.version, reference, champion, checks, challenger_numbers, ref_numbers)
    _describe(client, tracking_uri, model_name, challenger, checks, promoted, reference, champion)
    if promoted:
        client.set_model_version_tag(
            model_name, challenger.version, "gate.previous_champion", champion.version if champion else "none"
        )
        client.set_registered_model_alias(model_name, CHAMPION, challenger.version)
    return GateVerdict(
        model_name=model_name,
        challenger_version=str(challenger.version),
        reference=reference,
        champion_version=str(champion.version) if champion else None,
        passed=passed,
        promoted=promoted,
        checks=checks,
        challenger=challenger_numbers,
        reference_metrics=ref_numbers,
    )


def _champion_numbers(client, tracking_uri, model_name, champion, challenger, reevaluate):
    champion_metrics = _run_metrics(client, champion)
    if _eval_settings(client, champion) == _eval_settings(client, challenger):
        return {k: champion_metrics[k] for k in GATED}, True
    if reevaluate is None:
        return {k: champion_metrics.get(k, float("nan")) for k in GATED}, False
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{champion.version}", tracking_uri=tracking_uri
    )
    numbers = reevaluate(Path(local) / "adapter_weights")
    return {k: numbers[k] for k in GATED}, True


def _describe(client, tracking_uri, name, challenger, checks, promoted, reference, champion) -> None:
    """The version's description: the verdict and its numbers in one line, and a link to its grid."""
    run = client.get_run(evaluation_run_id(challenger))
    grid = descriptions.run_artifact_link(tracking_uri, run, "evaluation/grid.png")
    label = {"champion": f"champion v{champion.version}" if champion else "", "base": "the base model"}
    text = descriptions.gated_version_description(
        checks, promoted, label.get(reference, "itself"), run.data.metrics, grid
    )
    descriptions.set_version_description(client, name, str(challenger.version), text)


def _record(client, name, version, reference, champion, checks, challenger_numbers, ref_numbers) -> None:
    tags = {
        "gate.verdict": "passed" if all(c.passed for c in checks) else "refused",
        "gate.reference": f"champion v{champion.version}" if reference == "champion" else reference,
        "gate.failed_checks": ",".join(c.name for c in checks if not c.passed) or "none",
        **{f"gate.check.{c.name}": c.detail for c in checks},
        **{f"gate.challenger.{k}": f"{v:.6f}" for k, v in challenger_numbers.items()},
        **{f"gate.reference.{k}": f"{v:.6f}" for k, v in ref_numbers.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
