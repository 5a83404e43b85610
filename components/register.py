"""register: an MLflow run (params, metrics, report, lineage) and a model version with alias challenger.

The adapter is logged with MLflow's native ``mlflow.diffusers`` flavor, whose pyfunc loads the base with
``DiffusionPipeline.from_pretrained``: that dispatches on model_index.json's ``_class_name``, the same
name the model family is recognised by, so every family is served by its own pipeline class
(tests/model/test_families.py checks it). The base model is given to
MLflow as a local folder (so nothing is looked up online); its portable identity (name, content
hash, hub revision) is recorded as tags, since an absolute path means nothing on another machine.
Registering the same adapter twice returns the existing version instead of creating another. When
that adapter has been evaluated again (an evaluate-only change), the new evaluation is logged as a
run of its own, tagged with the version it evaluates, and the version's `conceptlab.eval_run_id` tag
moves to it: a run stays the immutable record of one evaluation (its eval params, metrics and
artifacts agree with each other), while MLflow fixes a version's `run_id` at creation, so the version
points at its current evaluation through tags. The gate and the reports read metrics from there.

"The same adapter never makes a second version" holds across processes and machines: two flow runs
that register one adapter at once (two demos started seconds apart, two workers) may each create a
version, so after creating one, register looks again at every version made from a run of this
adapter and keeps only the lowest; a higher one deletes itself (version and run) and returns the
lowest. Version numbers are handed out one at a time by the registry, so every process agrees on
which is lowest, and the one that made it never deletes it. This needs nothing but the registry API
(no lock service, no conditional write, which MLflow lacks), so it holds for every tracking URI:
SQLite, PostgreSQL, a remote `mlflow server`. A retry after a partial first attempt (the version was
created, then the server went away before its tags were written) finds that version and completes it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from components.base_model import model_identity, resolve_model
from components.config import Concept, RegisterParams
from components.io import ADAPTER_FILE, StageResult, read_json, sha256_file, sha256_json

TAG = "conceptlab"


class RegisterResult(StageResult):
    tracking_uri: str
    experiment: str
    run_id: str
    model_name: str
    version: str
    alias: str
    model_uri: str
    created: bool  # a new model version (a new adapter)
    eval_run_id: str  # the run with the version's current evaluation
    eval_recorded: bool  # this call logged an evaluation (a new version, or a new evaluation of the adapter)


def resolve_tracking_uri(configured: str, base_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI wins (team servers); a relative SQLite path is taken from ``base_dir``."""
    import os

    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str((base_dir / uri[len(prefix) :]).resolve())
    return uri


def git_commit(repo: Path) -> str:
    """HEAD of the git repository that holds ``repo`` (not of the process's working directory)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git repository)"


def evaluation_run_id(version) -> str:
    """The run that holds a model version's current evaluation (see the module docstring)."""
    return version.tags.get(f"{TAG}.eval_run_id") or version.run_id


def eval_settings_sha256(evaluation: dict) -> str:
    settings = {k: v for k, v in evaluation["settings"].items() if k != "instance_images"}
    return sha256_json({"settings": settings, "clip_model": evaluation["clip_model"]})


def _flatten(prefix: str, obj, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(obj)[:6000]
    return out


def _versions_of(client, experiment_id: str, concept: str, adapter_sha: str) -> list:
    """The model versions of ``concept`` made from a run that logged this adapter, lowest first."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG}.concept` = '{concept}' and tags.`{TAG}.adapter_sha256` = '{adapter_sha}'",
    )
    versions = [
        v for run in runs for v in client.search_model_versions(f"run_id = '{run.info.run_id}'") if v.name == concept
    ]
    return sorted(versions, key=lambda v: int(v.version))


def _keep_lowest(client, concept: str, my_run_id: str, versions: list):
    """After this process's run made a version: the lowest version of the adapter stays; this run's
    other versions (a concurrent registration got a lower number first, or a retried request made
    two) are withdrawn, and so is this run if no version is left on it."""
    lowest = versions[0]
    for v in versions[1:]:
        if v.run_id == my_run_id:
            client.delete_model_version(concept, v.version)
    if lowest.run_id != my_run_id:
        client.delete_run(my_run_id)
    return lowest


def register(
    concept: Concept,
    adapter_dir: Path,
    eval_dir: Path,
    params: RegisterParams,
    lineage: dict[str, str],
) -> RegisterResult:
    """``lineage`` must carry ``git_commit``: the revision whose dvc.lock describes this adapter."""
    import mlflow
    import mlflow.diffusers
    from mlflow import MlflowClient

    if "git_commit" not in lineage:
        raise ValueError("register needs lineage['git_commit'] (components.register.git_commit(repo))")
    adapter_sha = sha256_file(adapter_dir / ADAPTER_FILE)
    evaluation = read_json(eval_dir / "metrics.json")
    if evaluation["adapter_sha256"] != adapter_sha:
        raise ValueError(
            f"{eval_dir / 'metrics.json'} evaluates another adapter than {adapter_dir}; run `evaluate` again"
        )
    eval_sha = sha256_file(eval_dir / "metrics.json")
    base = model_identity(concept.base_model)
    mlflow.set_tracking_uri(params.tracking_uri)
    client = MlflowClient()
    experiment = mlflow.set_experiment(params.experiment)
    found = _versions_of(client, experiment.experiment_id, concept.name, adapter_sha)
    created = lost_race = False
    if found:
        version = found[0]
    else:
        run_id = _log_run(mlflow, concept, adapter_dir, eval_dir, evaluation, adapter_sha, eval_sha, base, lineage)
        versions = _versions_of(client, experiment.experiment_id, concept.name, adapter_sha)
        version = _keep_lowest(client, concept.name, run_id, versions)
        created = version.run_id == run_id
        lost_race = not created
    if created:
        recorded, untagged, eval_run_id = True, False, version.run_id
    else:
        version = client.get_model_version(concept.name, version.version)
        # A version whose tags were never written (its registration was cut short, or is still
        # writing them) is evaluated by its own run; the tags are written here unless that
        # registration is another process's, running now (lost_race), which writes its own.
        untagged = f"{TAG}.eval_run_id" not in version.tags and not lost_race
        current_sha = version.tags.get(f"{TAG}.eval_metrics_sha256") or client.get_run(version.run_id).data.tags.get(
            f"{TAG}.eval_metrics_sha256"
        )
        recorded = current_sha != eval_sha
        eval_run_id = (
            _log_evaluation(mlflow, concept, eval_dir, evaluation, adapter_sha, eval_sha, version.version, lineage)
            if recorded
            else evaluation_run_id(version)
        )
    client.set_registered_model_alias(concept.name, params.alias, version.version)
    version_tags = {
        "adapter_sha256": adapter_sha,
        "base_model": base["name"],
        "base_model_sha256": base["sha256"],
        "base_model_revision": base.get("revision", ""),
    }
    if recorded or untagged:  # the version follows its newest evaluation (and the commit that holds it)
        version_tags.update(
            eval_run_id=eval_run_id,
            eval_metrics_sha256=eval_sha,
            eval_settings_sha256=eval_settings_sha256(evaluation),
            git_commit=lineage["git_commit"],
        )
    for key, value in version_tags.items():
        client.set_model_version_tag(concept.name, version.version, f"{TAG}.{key}", value)
    _describe(client, params.tracking_uri, concept, version, evaluation, base, eval_run_id, recorded)
    return RegisterResult(
        tracking_uri=params.tracking_uri,
        experiment=params.experiment,
        run_id=version.run_id,
        model_name=concept.name,
        version=str(version.version),
        alias=params.alias,
        model_uri=f"models:/{concept.name}@{params.alias}",
        created=created,
        eval_run_id=eval_run_id,
        eval_recorded=recorded,
    )


def _describe(client, tracking_uri, concept, version, evaluation, base, eval_run_id, recorded) -> None:
    """The registry's description fields: what the concept is, and (for a new evaluation, or a version
    without one) the version's numbers, "not yet gated" and its grid; the gate rewrites the latter."""
    from components import descriptions

    photos = int(evaluation["settings"]["instance_images"])
    text = descriptions.model_description(concept, base, photos, str(version.version))
    descriptions.set_model_description(client, concept.name, text)
    if recorded or not version.description:
        grid = descriptions.run_artifact_link(tracking_uri, client.get_run(eval_run_id), "evaluation/grid.png")
        text = descriptions.pending_version_description(evaluation["metrics"], grid)
        descriptions.set_version_description(client, concept.name, str(version.version), text)


def _evaluation_tags(evaluation: dict, eval_sha: str, lineage: dict[str, str]) -> dict[str, str]:
    return {
        # The gate compares numbers only between evaluations made with identical settings.
        f"{TAG}.eval_settings_sha256": eval_settings_sha256(evaluation),
        f"{TAG}.eval_metrics_sha256": eval_sha,
        **{f"{TAG}.{k}": str(v) for k, v in lineage.items()},
    }


def _log_evaluation_data(mlflow, evaluation: dict, eval_dir: Path) -> None:
    """The evaluation's settings, metrics (adapter and base) and files, into the active run."""
    mlflow.log_params(
        _flatten(
            "eval",
            {k: v for k, v in evaluation["settings"].items() if k not in ("generated_prompts", "base_model")},
            {},
        )
    )
    mlflow.log_metrics({k: float(v) for k, v in evaluation["metrics"].items()})
    mlflow.log_metrics({f"base_{k}": float(v) for k, v in evaluation["base"].items()})
    mlflow.log_artifacts(str(eval_dir), artifact_path="evaluation")


def _log_evaluation(mlflow, concept, eval_dir, evaluation, adapter_sha, eval_sha, version, lineage) -> str:
    """A new evaluation of an already registered adapter, as its own run linked to the version."""
    tags = {
        f"{TAG}.concept": concept.name,
        f"{TAG}.kind": "evaluation",
        f"{TAG}.adapter_sha256": adapter_sha,
        f"{TAG}.evaluates": f"models:/{concept.name}/{version}",
        **_evaluation_tags(evaluation, eval_sha, lineage),
    }
    with mlflow.start_run(run_name=f"{concept.name}-v{version}-eval-{eval_sha[:8]}", tags=tags) as run:
        _log_evaluation_data(mlflow, evaluation, eval_dir)
        return run.info.run_id


def _log_run(mlflow, concept, adapter_dir, eval_dir, evaluation, adapter_sha, eval_sha, base, lineage) -> str:
    import diffusers
    import peft
    import torch
    import transformers

    train_config = read_json(adapter_dir / "train_config.json")
    tags = {
        f"{TAG}.concept": concept.name,
        f"{TAG}.kind": "training",
        f"{TAG}.adapter_sha256": adapter_sha,
        f"{TAG}.base_model": base["name"],
        f"{TAG}.base_model_sha256": base["sha256"],
        f"{TAG}.base_model_revision": base.get("revision", ""),
        f"{TAG}.family": train_config.get("family", ""),
        f"{TAG}.train_inputs_sha256": train_config["inputs_sha256"],
        **_evaluation_tags(evaluation, eval_sha, lineage),
    }
    with mlflow.start_run(run_name=f"{concept.name}-{adapter_sha[:8]}", tags=tags) as run:
        params = _flatten("train", train_config["params"], {})
        params.update(
            {
                "concept.class_noun": concept.class_noun,
                "concept.instance_token": concept.instance_token,
                "resolution": str(train_config["resolution"]),
            }
        )
        mlflow.log_params(params)
        _log_evaluation_data(mlflow, evaluation, eval_dir)
        _log_loss_curve(run.info.run_id, adapter_dir / "loss.csv")
        for name in ("train_config.json", "loss.csv", "train.json", "kohya_lora.safetensors"):
            if (adapter_dir / name).exists():
                mlflow.log_artifact(str(adapter_dir / name), artifact_path="training")
        # The flavor copies a folder that holds only the diffusers-format adapter.
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(adapter_dir / ADAPTER_FILE, Path(tmp) / ADAPTER_FILE)
            mlflow.diffusers.log_model(
                tmp,
                base_model=str(resolve_model(concept.base_model)),
                name="adapter",
                registered_model_name=concept.name,
                pip_requirements=[
                    f"diffusers=={diffusers.__version__}",
                    f"peft=={peft.__version__}",
                    f"transformers=={transformers.__version__}",
                    f"torch=={torch.__version__.split('+')[0]}",
                ],
                metadata={"base_model": base, "adapter_sha256": adapter_sha},
                signature=_signature(int(train_config["resolution"])),
            )
        return run.info.run_id


def _signature(resolution: int):
    """The flavor's prompt -> PNG signature, with the adapter's own resolution as default size."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(type=DataType.string, name="prompt")]),
        outputs=Schema([ColSpec(type=DataType.binary, name="image")]),
        params=ParamSchema(
            [
                ParamSpec(name="num_inference_steps", dtype=DataType.integer, default=30),
                ParamSpec(name="guidance_scale", dtype=DataType.double, default=7.5),
                ParamSpec(name="height", dtype=DataType.integer, default=resolution),
                ParamSpec(name="width", dtype=DataType.integer, default=resolution),
                ParamSpec(name="negative_prompt", dtype=DataType.string, default=""),
            ]
        ),
    )


def _log_loss_curve(run_id: str, path: Path) -> None:
    """The loss curve as one metric history, in batches (one DB round trip per 1000 points)."""
    import csv
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    with open(path) as f:
        points = [Metric("train_loss", float(r["loss"]), now, int(r["step"])) for r in csv.DictReader(f)]
    for start in range(0, len(points), 1000):
        MlflowClient().log_batch(run_id, metrics=points[start : start + 1000])
