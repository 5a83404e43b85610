"""The gate against a real MLflow registry (SQLite): aliases move only when the rule passes."""

import mlflow
import pytest
from mlflow import MlflowClient

from components.config import PromotionParams
from components.promote import promote

RULE = PromotionParams(clip_i_margin=0.01, clip_t_margin=0.01, max_prior_drift=0.2)
NAME = "gate-test"


@pytest.fixture
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("gate")
    return uri, MlflowClient(tracking_uri=uri)


def evaluation(metrics: dict) -> dict:
    """metrics.json as evaluate writes it: the means and the per-(prompt, seed) scores they are means
    of (here every pair scores the mean: the intervals are the means themselves)."""
    concept = {k: metrics[k] for k in ("clip_i", "clip_t", "base_clip_i", "base_clip_t")}
    samples = [
        {"kind": "concept", "prompt": p, "seed": s, "scores": concept} for p in ("a sks", "a red sks") for s in (0, 1)
    ] + [
        {"kind": "class", "prompt": "a dog", "seed": s, "scores": {"prior_drift": metrics["prior_drift"]}}
        for s in (0, 1)
    ]
    return {"metrics": metrics, "samples": samples}


def add_version(client, metrics: dict, settings: str = "s1", weights: bytes = b"x", samples: bool = True) -> str:
    """A real run with metrics, its evaluation/metrics.json and an adapter file, registered as a new
    version and made challenger."""
    with mlflow.start_run(tags={"conceptlab.eval_settings_sha256": settings}) as run:
        mlflow.log_metrics(metrics)
        if samples:
            mlflow.log_dict(evaluation(metrics), "evaluation/metrics.json")
        mlflow.log_text(weights.decode(), "adapter/adapter_weights/pytorch_lora_weights.safetensors")
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    version = client.create_model_version(NAME, f"{run.info.artifact_uri}/adapter", run.info.run_id)
    client.set_registered_model_alias(NAME, "challenger", version.version)
    return str(version.version)


def alias(client, name):
    return str(client.get_model_version_by_alias(NAME, name).version)


GOOD = {
    "clip_i": 0.80,
    "clip_t": 0.30,
    "prior_drift": 0.05,
    "clip_i_gain": 0.20,
    "base_clip_i": 0.60,
    "base_clip_t": 0.29,
}


def test_first_version_is_gated_against_the_base_model(registry):
    uri, client = registry
    v1 = add_version(client, GOOD)
    verdict = promote(NAME, uri, RULE)
    assert verdict.reference == "base" and verdict.passed and verdict.promoted
    assert alias(client, "champion") == v1
    tags = client.get_model_version(NAME, v1).tags
    assert tags["gate.verdict"] == "passed" and tags["gate.reference"] == "base"
    assert tags["gate.challenger.clip_i"] == "0.800000" and tags["gate.previous_champion"] == "none"
    # The version's description: the verdict and its numbers in one line, and its run's grid.
    text = client.get_model_version(NAME, v1).description
    run = client.get_run(client.get_model_version(NAME, v1).run_id)
    assert text.startswith("PASSED → champion (vs the base model): ✓ CLIP-I gain over the base model +0.2000")
    assert "CLIP-I 0.8000 vs reference 0.6000" in text and "CLIP-T 0.3000 vs reference 0.2900" in text
    assert "prior drift 0.0500, interval [0.0500, 0.0500] (95%, 2 pairs) (at most 0.2)" in text and "\n" not in text
    assert tags["gate.interval.learned"] == "0.200000,0.200000" and tags["gate.confidence"] == "0.95"
    assert text.endswith(f". Grid: {run.info.artifact_uri}/evaluation/grid.png")


def test_worse_than_base_is_refused_and_no_champion_appears(registry):
    uri, client = registry
    add_version(client, {**GOOD, "clip_i": 0.50, "clip_i_gain": -0.10})
    verdict = promote(NAME, uri, RULE)
    assert not verdict.passed and not verdict.promoted
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(NAME, "champion")


def test_a_deliberately_worse_challenger_is_refused_and_the_champion_stays(registry):
    uri, client = registry
    v1 = add_version(client, GOOD)
    promote(NAME, uri, RULE)
    v2 = add_version(client, {**GOOD, "clip_i": 0.70, "prior_drift": 0.5})
    verdict = promote(NAME, uri, RULE)
    assert verdict.reference == "champion" and not verdict.passed
    assert {c.name for c in verdict.checks if not c.passed} == {"clip_i", "prior_drift"}
    assert alias(client, "champion") == v1 and alias(client, "challenger") == v2
    tags = client.get_model_version(NAME, v2).tags
    assert tags["gate.verdict"] == "refused" and tags["gate.failed_checks"] == "clip_i,prior_drift"
    assert tags["gate.reference"] == f"champion v{v1}"
    text = client.get_model_version(NAME, v2).description
    assert text.startswith(f"REFUSED (failed clip_i, prior_drift) vs champion v{v1}: ")
    assert "✗ CLIP-I 0.7000 vs reference 0.8000, change interval [-0.1000, -0.1000]" in text
    assert "lower bound -0.1000 is below -0.0100" in text and "✗ prior drift 0.5000" in text
    assert (
        tags["gate.interval.clip_i"] == "-0.100000,-0.100000"
        and tags["gate.interval.prior_drift"] == "0.500000,0.500000"
    )


def test_a_better_challenger_takes_over_and_there_is_one_champion(registry):
    uri, client = registry
    v1 = add_version(client, GOOD)
    promote(NAME, uri, RULE)
    v2 = add_version(client, {**GOOD, "clip_i": 0.85})
    verdict = promote(NAME, uri, RULE)
    assert verdict.promoted and alias(client, "champion") == v2
    versions = [client.get_model_version(NAME, v.version) for v in client.search_model_versions(f"name = '{NAME}'")]
    assert [str(v.version) for v in versions if "champion" in v.aliases] == [v2]
    assert client.get_model_version(NAME, v2).tags["gate.previous_champion"] == v1


def test_the_champion_again_is_a_no_op(registry):
    uri, client = registry
    v1 = add_version(client, GOOD)
    promote(NAME, uri, RULE)
    verdict = promote(NAME, uri, RULE)
    assert verdict.reference == "self" and verdict.passed and not verdict.promoted
    text = client.get_model_version(NAME, v1).description
    assert text.startswith("PASSED, already champion (vs itself): ✓ v1 is the champion · CLIP-I 0.8000")
    assert alias(client, "champion") == v1


def test_a_champion_evaluated_otherwise_is_evaluated_again(registry):
    uri, client = registry
    add_version(client, GOOD, settings="old")
    promote(NAME, uri, RULE)
    v2 = add_version(client, {**GOOD, "clip_i": 0.75}, settings="new")

    refused = promote(NAME, uri, RULE)  # numbers from other settings are not compared
    assert not refused.passed and refused.checks[0].name == "comparable"

    seen = []

    def reevaluate(adapter_dir):
        seen.append((adapter_dir / "pytorch_lora_weights.safetensors").read_text())
        return evaluation({**GOOD, "clip_i": 0.74, "clip_i_gain": 0.14})

    verdict = promote(NAME, uri, RULE, reevaluate=reevaluate)
    assert seen == ["x"], "the champion's own adapter files were handed over"
    assert verdict.passed and verdict.reference_metrics["clip_i"] == 0.74 and alias(client, "champion") == v2


def test_an_evaluation_without_per_pair_scores_is_refused_until_evaluated_again(registry):
    uri, client = registry
    add_version(client, GOOD, samples=False)
    verdict = promote(NAME, uri, RULE)
    assert not verdict.passed and [c.name for c in verdict.checks] == ["evaluated"]
    assert "evaluate it again" in verdict.checks[0].detail


def test_a_champion_without_per_pair_scores_is_evaluated_again(registry):
    uri, client = registry
    add_version(client, GOOD, samples=False)
    client.set_registered_model_alias(NAME, "champion", "1")  # promoted before the gate used intervals
    v2 = add_version(client, {**GOOD, "clip_i": 0.85})
    refused = promote(NAME, uri, RULE).checks[0]
    assert refused.name == "comparable" and "no per-(prompt, seed) scores" in refused.detail
    verdict = promote(NAME, uri, RULE, reevaluate=lambda adapter_dir: evaluation(GOOD))
    assert verdict.promoted and alias(client, "champion") == v2
    assert verdict.checks[1].interval.low == pytest.approx(0.05)
