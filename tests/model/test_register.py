"""register: a real MLflow SQLite store; one version per adapter, alias challenger, loadable model."""

import io
import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from components.base_model import model_identity, resolve_model
from components.curate import CurateResult
from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_register, run_train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def evaluated(cfg, layout):
    for stage in (run_curate, run_caption, run_prior, run_train, run_evaluate):
        stage(cfg, layout)
    return cfg, layout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def as_hub_snapshot(cache: Path, repo_id: str, revision: str, folder: Path) -> None:
    """``folder`` laid out as huggingface_hub's cache holds a downloaded snapshot of ``repo_id``."""
    entry = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, entry / "snapshots" / revision)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision)


def test_registers_once_with_alias_lineage_and_artifacts(evaluated, tmp_path, monkeypatch):
    cfg, layout = evaluated
    # The concept lives in a git repository; the command runs from another one (this project).
    for args in (
        ["init", "-q"],
        ["add", "concept", "params.yaml"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
    ):
        git(tmp_path, *args)
    head = git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.chdir(ROOT)
    assert git(ROOT, "rev-parse", "HEAD") != head
    # The base model named by hub id, from the local hub cache: its revision is part of its identity.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    as_hub_snapshot(tmp_path / "hub", "conceptlab/tiny-sd", "0123456789abcdef", resolve_model("tiny-sd"))
    cfg = cfg.model_copy(update={"concept": cfg.concept.model_copy(update={"base_model": "conceptlab/tiny-sd"})})

    first = run_register(cfg, layout)
    second = run_register(cfg, layout)

    assert first.created and not second.created and first.eval_recorded and not second.eval_recorded
    assert (first.version, first.run_id, first.eval_run_id) == (second.version, second.run_id, first.run_id)
    mlflow.set_tracking_uri(cfg.params.registry.tracking_uri)
    client = MlflowClient()
    assert len(client.search_model_versions("name = 'toy-robot'")) == 1
    assert len(client.search_runs([client.get_experiment_by_name("conceptlab").experiment_id])) == 1
    version = client.get_model_version_by_alias("toy-robot", "challenger")
    assert str(version.version) == first.version
    run = client.get_run(first.run_id)
    tags = run.data.tags
    adapter_sha = json.loads((layout.evaluation / "metrics.json").read_text())["adapter_sha256"]
    assert tags["conceptlab.adapter_sha256"] == adapter_sha
    assert tags["conceptlab.git_commit"] == head, "the concept's repository, not the working directory's"
    assert tags["conceptlab.prior_key"] == json.loads((layout.prior / "manifest.json").read_text())["key"]
    assert len(tags["conceptlab.curated_manifest_sha256"]) == 64
    # The version itself carries the base model's portable identity: name, content hash, revision.
    identity = {
        "conceptlab.base_model": "conceptlab/tiny-sd",
        "conceptlab.base_model_sha256": model_identity("tiny-sd")["sha256"],  # same files, same hash
        "conceptlab.base_model_revision": "0123456789abcdef",
        "conceptlab.adapter_sha256": adapter_sha,
        "conceptlab.git_commit": head,
        "conceptlab.eval_run_id": first.run_id,
    }
    assert {k: version.tags.get(k) for k in identity} == identity
    assert {k: tags[k] for k in identity if k != "conceptlab.eval_run_id"} == {
        k: v for k, v in identity.items() if k != "conceptlab.eval_run_id"
    }
    assert run.data.params["train.alpha"] == "8.0" and run.data.params["train.rank"] == "4"
    assert "clip_i" in run.data.metrics and "base_clip_i" in run.data.metrics
    assert len(client.get_metric_history(first.run_id, "train_loss")) == 6
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/grid.png", "evaluation/report.md"} <= artifacts
    # The HTML report (images inline) is an artifact of the registered run, the same bytes as the workspace's.
    assert "evaluation/report.html" in artifacts
    logged = Path(mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="evaluation/report.html"))
    assert logged.read_bytes() == (layout.evaluation / "report.html").read_bytes()
    # MLflow's own fields: what the concept is, and the version's numbers before any gate, with its grid.
    numbers = json.loads((layout.evaluation / "metrics.json").read_text())
    photos = numbers["settings"]["instance_images"]
    assert photos == len(CurateResult.read(layout.curated / "manifest.json").accepted_images(layout.curated)) > 0
    described = client.get_registered_model("toy-robot").description
    for part in ("one particular robot", '"sks robot"', "conceptlab/tiny-sd", model_identity("tiny-sd")["sha256"][:12]):
        assert part in described
    assert (
        "revision 0123456789abcdef" in described
        and f"v{first.version} learned it from {photos} accepted photos" in described
    )
    assert_pending_description(client, first.version, numbers["metrics"], run)
    assert json.loads((layout.registration).read_text())["version"] == first.version

    # An evaluate-only change: same adapter, same version, but the new numbers reach the registry as a
    # new evaluation run that the version points at (and the gate reads).
    evaluate = cfg.params.evaluate.model_copy(update={"guidance_scale": 3.0})
    cfg2 = cfg.model_copy(update={"params": cfg.params.model_copy(update={"evaluate": evaluate})})
    new = run_evaluate(cfg2, layout).metrics
    second = run_register(cfg2, layout)

    assert not second.created and second.version == first.version and second.run_id == first.run_id
    assert second.eval_recorded and second.eval_run_id != first.run_id
    client = MlflowClient(tracking_uri=cfg.params.registry.tracking_uri)
    version = client.get_model_version("toy-robot", first.version)
    assert version.tags["conceptlab.eval_run_id"] == second.eval_run_id
    assert_pending_description(client, first.version, new, client.get_run(second.eval_run_id))
    evaluation = client.get_run(second.eval_run_id)
    assert evaluation.data.metrics["clip_i"] == pytest.approx(new["clip_i"])
    assert evaluation.data.metrics["clip_i"] != client.get_run(first.run_id).data.metrics["clip_i"]
    assert evaluation.data.params["eval.guidance_scale"] == "3.0"
    assert evaluation.data.tags["conceptlab.evaluates"] == f"models:/toy-robot/{first.version}"
    assert version.tags["conceptlab.eval_settings_sha256"] == evaluation.data.tags["conceptlab.eval_settings_sha256"]
    assert (
        version.tags["conceptlab.eval_settings_sha256"]
        != client.get_run(first.run_id).data.tags["conceptlab.eval_settings_sha256"]
    )
    assert {a.path for a in client.list_artifacts(second.eval_run_id, "evaluation")} >= {"evaluation/metrics.json"}
    # The gate reads the version's current evaluation.
    from components.promote import promote

    verdict = promote("toy-robot", cfg.params.registry.tracking_uri, cfg.params.promotion)
    assert verdict.challenger["clip_i"] == pytest.approx(new["clip_i"])
    gated = client.get_model_version("toy-robot", first.version).description
    assert gated.startswith(("PASSED", "REFUSED")) and f"CLIP-I {new['clip_i']:.4f} vs reference" in gated
    # Registering again with nothing new logs nothing.
    third = run_register(cfg2, layout)
    assert not third.eval_recorded and third.eval_run_id == second.eval_run_id
    assert len(client.search_runs([client.get_experiment_by_name("conceptlab").experiment_id])) == 2


def assert_pending_description(client, version, metrics, eval_run):
    text = client.get_model_version("toy-robot", version).description
    assert text.startswith("Not yet gated · ")
    for part in (
        f"CLIP-I {metrics['clip_i']:.4f}",
        f"gain {metrics['clip_i_gain']:+.4f}",
        f"CLIP-T {metrics['clip_t']:.4f}",
        f"prior drift {metrics['prior_drift']:.4f}",
    ):
        assert part in text
    assert text.endswith(f"Grid: {eval_run.info.artifact_uri}/evaluation/grid.png"), "the version's own run's grid"
    assert "\n" not in text


def test_a_new_adapter_is_a_new_version_and_takes_the_alias(evaluated):
    cfg, layout = evaluated
    first = run_register(cfg, layout)
    params = cfg.params.model_copy(update={"train": cfg.params.train.model_copy(update={"seed": 1})})
    cfg2 = cfg.model_copy(update={"params": params})
    run_train(cfg2, layout)
    run_evaluate(cfg2, layout)
    second = run_register(cfg2, layout)
    assert second.created and int(second.version) == int(first.version) + 1
    mlflow.set_tracking_uri(cfg.params.registry.tracking_uri)
    assert str(MlflowClient().get_model_version_by_alias("toy-robot", "challenger").version) == second.version
    described = MlflowClient().get_registered_model("toy-robot").description
    assert f"Challenger v{second.version} learned it from" in described, "the description follows the registration"


def test_stale_evaluation_is_refused(evaluated):
    cfg, layout = evaluated
    params = cfg.params.model_copy(update={"train": cfg.params.train.model_copy(update={"seed": 3})})
    run_train(cfg.model_copy(update={"params": params}), layout)
    with pytest.raises(ValueError, match="evaluates another adapter"):
        run_register(cfg, layout)


def test_registered_model_loads_as_pyfunc_and_generates_png(evaluated):
    """The registry's model draws what the adapter in plain diffusers draws, and not what the base draws."""
    from diffusers import DiffusionPipeline

    cfg, layout = evaluated
    result = run_register(cfg, layout)
    mlflow.set_tracking_uri(cfg.params.registry.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    torch.manual_seed(0)  # the flavor's pipeline draws its noise from torch's global generator
    out = model.predict({"prompt": ["a photo of sks robot", "a robot"]}, params={"num_inference_steps": 2})
    assert len(out) == 2
    image = Image.open(io.BytesIO(out[0]))
    assert image.format == "PNG" and image.size == (64, 64), "the signature defaults to the adapter's resolution"

    pipe = DiffusionPipeline.from_pretrained(resolve_model("tiny-sd"))
    pipe.set_progress_bar_config(disable=True)

    def render():
        torch.manual_seed(0)
        images = pipe(["a photo of sks robot", "a robot"], num_inference_steps=2, height=64, width=64).images
        return np.asarray(images[0], dtype=np.int16)

    base = render()
    pipe.load_lora_weights(layout.adapter)
    adapter = render()
    served = np.asarray(image, dtype=np.int16)
    assert np.abs(served - base).max() > 8, "the registered model applies the LoRA adapter"
    assert np.abs(served - adapter).max() <= 1, "and draws what the adapter draws in plain diffusers"
