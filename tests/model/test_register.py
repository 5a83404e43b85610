"""register: a real MLflow SQLite store; one version per adapter, alias challenger, loadable model."""

import io
import json

import mlflow
import pytest
from mlflow import MlflowClient
from PIL import Image

from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_register, run_train


@pytest.fixture
def evaluated(cfg, layout):
    for stage in (run_curate, run_caption, run_prior, run_train, run_evaluate):
        stage(cfg, layout)
    return cfg, layout


def test_registers_once_with_alias_lineage_and_artifacts(evaluated):
    cfg, layout = evaluated
    first = run_register(cfg, layout)
    second = run_register(cfg, layout)

    assert first.created and not second.created
    assert (first.version, first.run_id) == (second.version, second.run_id)
    mlflow.set_tracking_uri(cfg.params.registry.tracking_uri)
    client = MlflowClient()
    assert len(client.search_model_versions("name = 'toy-robot'")) == 1
    version = client.get_model_version_by_alias("toy-robot", "challenger")
    assert str(version.version) == first.version
    run = client.get_run(first.run_id)
    tags = run.data.tags
    assert len(tags["conceptlab.adapter_sha256"]) == 64
    assert len(tags["conceptlab.base_model_sha256"]) == 64
    assert tags["conceptlab.prior_key"] and tags["conceptlab.curated_manifest_sha256"]
    assert "conceptlab.git_commit" in tags
    assert run.data.params["train.alpha"] == "8.0" and run.data.params["train.rank"] == "4"
    assert "clip_i" in run.data.metrics and "base_clip_i" in run.data.metrics
    assert len(client.get_metric_history(first.run_id, "train_loss")) == 6
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/grid.png", "evaluation/report.md"} <= artifacts
    assert json.loads((layout.registration).read_text())["version"] == first.version


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


def test_stale_evaluation_is_refused(evaluated):
    cfg, layout = evaluated
    params = cfg.params.model_copy(update={"train": cfg.params.train.model_copy(update={"seed": 3})})
    run_train(cfg.model_copy(update={"params": params}), layout)
    with pytest.raises(ValueError, match="evaluates another adapter"):
        run_register(cfg, layout)


def test_registered_model_loads_as_pyfunc_and_generates_png(evaluated):
    cfg, layout = evaluated
    result = run_register(cfg, layout)
    mlflow.set_tracking_uri(cfg.params.registry.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    out = model.predict({"prompt": ["a photo of sks robot", "a robot"]}, params={"num_inference_steps": 2})
    assert len(out) == 2
    image = Image.open(io.BytesIO(out[0]))
    assert image.format == "PNG" and image.size == (64, 64), "the signature defaults to the adapter's resolution"
