"""promote: the gate that moves the registry alias `champion` to the challenger, or refuses.

The challenger is compared with the current champion, or with the base model when there is no
champion, on the same evaluation prompts and seeds (a champion evaluated with other settings is
evaluated again with the challenger's before the comparison). Each gated number is decided by its
confidence interval from the paired (prompt, seed) scores of the two evaluations (components/intervals.py),
not by its mean alone: a change must clear the rule over its whole interval, so a verdict that a few
other seeds would overturn is a refusal. The verdict, its numbers and intervals are
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
from components.intervals import Interval, bootstrap_mean
from components.io import StageResult
from components.register import evaluation_run_id

CHALLENGER, CHAMPION = "challenger", "champion"
GATED = ("clip_i", "clip_t", "prior_drift", "clip_i_gain")
Pairs = dict[tuple[str, int], dict[str, float]]  # (prompt, seed) -> that pair's scores


class Check(BaseModel):
    name: str
    passed: bool
    detail: str
    interval: Interval | None = None  # the gated number's interval; None for checks without a number


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


def paired(samples: list[dict], kind: str) -> Pairs:
    """An evaluation's per-(prompt, seed) scores (metrics.json ``samples``) of one kind of prompt."""
    return {(s["prompt"], int(s["seed"])): s["scores"] for s in samples if s["kind"] == kind}


def decide(challenger: list[dict], reference: list[dict] | None, rule: PromotionParams) -> list[Check]:
    """The rule, as data: one check per gated number, each decided by its confidence interval.

    ``challenger`` and ``reference`` are evaluations' ``samples``; ``reference`` None is the base model
    (its images are in the challenger's evaluation, at the same pairs). A reference evaluated at other
    (prompt, seed) pairs raises ValueError: the numbers are not paired."""
    concept, drift = paired(challenger, "concept"), paired(challenger, "class")
    ref = concept if reference is None else paired(reference, "concept")
    ref_prefix = "base_" if reference is None else ""
    if set(ref) != set(concept):
        raise ValueError("the reference was evaluated at other (prompt, seed) pairs than the challenger")

    def interval(values: dict[tuple[str, int], float]) -> Interval:
        keys = sorted(values)
        return bootstrap_mean(
            [values[k] for k in keys], [k[0] for k in keys], rule.confidence, rule.bootstrap_resamples
        )

    def change(name: str) -> Interval:
        return interval({k: v[name] - ref[k][ref_prefix + name] for k, v in concept.items()})

    def mean(name: str, pairs: Pairs, prefix: str = "") -> float:
        return sum(v[prefix + name] for v in pairs.values()) / len(pairs)

    gain = interval({k: v["clip_i"] - v["base_clip_i"] for k, v in concept.items()})
    d_clip_i, d_clip_t = change("clip_i"), change("clip_t")
    prior = interval({k: v["prior_drift"] for k, v in drift.items()})
    return [
        _at_least(
            "learned",
            f"CLIP-I gain over the base model {gain.mean:+.4f}",
            gain,
            rule.min_clip_i_gain,
            f"at least {rule.min_clip_i_gain}",
        ),
        _at_least(
            "clip_i",
            f"CLIP-I {mean('clip_i', concept):.4f} vs reference {mean('clip_i', ref, ref_prefix):.4f}",
            d_clip_i,
            -rule.clip_i_margin,
            f"margin {rule.clip_i_margin}",
        ),
        _at_least(
            "clip_t",
            f"CLIP-T {mean('clip_t', concept):.4f} vs reference {mean('clip_t', ref, ref_prefix):.4f}",
            d_clip_t,
            -rule.clip_t_margin,
            f"margin {rule.clip_t_margin}",
        ),
        Check(
            name="prior_drift",
            passed=prior.high <= rule.max_prior_drift,
            detail=f"prior drift {prior.mean:.4f}, interval {prior.text(signed=False)} (at most {rule.max_prior_drift})"
            + ("" if prior.high <= rule.max_prior_drift else f": upper bound {prior.high:.4f} is above it"),
            interval=prior,
        ),
    ]


def intervals_vs_base(samples: list[dict], rule: PromotionParams) -> dict[str, Interval]:
    """The gate's intervals for an evaluation against its base model: CLIP-I and CLIP-T changes, drift."""
    checks = {c.name: c.interval for c in decide(samples, None, rule)}
    return {name: checks[name] for name in ("clip_i", "clip_t", "prior_drift")}


def _at_least(name: str, head: str, interval: Interval, bound: float, rule_text: str) -> Check:
    """Passes when the whole interval of the change is at or above ``bound``."""
    passed = interval.low >= bound
    what = "" if name == "learned" else "change "
    detail = f"{head}, {what}interval {interval.text()} ({rule_text})"
    if not passed:
        detail += f": lower bound {interval.low:+.4f} is below {bound:+.4f}"
    return Check(name=name, passed=passed, detail=detail, interval=interval)


def evaluation_samples(tracking_uri: str, version) -> list[dict] | None:
    """The per-(prompt, seed) scores of the version's current evaluation (its run's
    evaluation/metrics.json); None for an evaluation made before they were recorded."""
    import json

    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=evaluation_run_id(version), artifact_path="evaluation/metrics.json", tracking_uri=tracking_uri
        )
    except (MlflowException, OSError):
        return None
    return json.loads(Path(path).read_text(encoding="utf-8")).get("samples") or None


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
    reevaluate: Callable[[Path], dict] | None = None,
) -> GateVerdict:
    """Gates the version that holds alias `challenger`.

    ``reevaluate(adapter_dir) -> evaluation`` (metrics.json's content: ``metrics`` and ``samples``) is
    called for a champion whose evaluation settings differ from the challenger's, or that has no
    per-(prompt, seed) scores; without it such a champion is a refusal (numbers not comparable).
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
    c_samples = evaluation_samples(tracking_uri, challenger)

    if champion is not None and champion.version == challenger.version:
        reference, ref_numbers = "self", challenger_numbers
        checks = [Check(name="already_champion", passed=True, detail=f"v{challenger.version} is the champion")]
    elif c_samples is None:
        reference = "champion" if champion else "base"
        ref_numbers = {k: float("nan") for k in GATED}
        checks = [
            Check(
                name="evaluated",
                passed=False,
                detail="the challenger's evaluation has no per-(prompt, seed) scores (made before the gate "
                "used intervals): evaluate it again",
            )
        ]
    elif champion is None:
        reference = "base"
        ref_numbers = {
            "clip_i": c_metrics["base_clip_i"],
            "clip_t": c_metrics["base_clip_t"],
            "prior_drift": 0.0,
            "clip_i_gain": 0.0,
        }
        checks = decide(c_samples, None, rule)
    else:
        reference = "champion"
        ref_numbers, ref_samples = _champion_numbers(client, tracking_uri, model_name, champion, challenger, reevaluate)
        checks = _compare(c_samples, ref_samples, rule)

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


def _compare(c_samples: list[dict], ref_samples: list[dict] | str, rule: PromotionParams) -> list[Check]:
    """``ref_samples``: the champion's per-pair scores, or why there are none."""
    why = ref_samples
    if not isinstance(ref_samples, str):
        try:
            return decide(c_samples, ref_samples, rule)
        except ValueError as exc:
            why = str(exc)
    return [Check(name="comparable", passed=False, detail=why)]


def _champion_numbers(client, tracking_uri, model_name, champion, challenger, reevaluate):
    """The champion's means and per-pair scores at the challenger's settings (re-evaluated if need be),
    or instead of the scores the reason they cannot be had."""
    champion_metrics = _run_metrics(client, champion)
    why = "the champion was evaluated with other settings and could not be re-evaluated"
    if _eval_settings(client, champion) == _eval_settings(client, challenger):
        samples = evaluation_samples(tracking_uri, champion)
        if samples is not None:
            return {k: champion_metrics[k] for k in GATED}, samples
        why = "the champion's evaluation has no per-(prompt, seed) scores and could not be re-evaluated"
    if reevaluate is None:
        return {k: champion_metrics.get(k, float("nan")) for k in GATED}, why
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{champion.version}", tracking_uri=tracking_uri
    )
    evaluation = reevaluate(Path(local) / "adapter_weights")
    return {k: evaluation["metrics"][k] for k in GATED}, evaluation["samples"]


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
        # The interval each check was decided by: "low,high" of the gated number (a change for
        # clip_i and clip_t, the gain for learned, the drift itself for prior_drift).
        **{f"gate.interval.{c.name}": f"{c.interval.low:.6f},{c.interval.high:.6f}" for c in checks if c.interval},
    }
    if any(c.interval for c in checks):
        first = next(c.interval for c in checks if c.interval)
        tags["gate.confidence"] = str(first.confidence)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
