"""The `conceptlab` command line end to end, as a person runs it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from components.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_every_command_has_help():
    for command in ("curate", "caption", "prior", "train", "evaluate", "register", "run", "demo", "models", "flow"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_stage_by_stage_chain(concept_dir, params_file, tmp_path):
    concept, work = concept_dir / "concept.yaml", tmp_path / "work"
    (concept_dir / "photos" / "notes.txt").write_text("not a photo")
    common = ["--params", params_file, "--work-dir", work]

    curate = cli("curate", concept, *common)
    assert curate.exit_code == 0
    assert "6 accepted, 1 rejected" in curate.output and "notes.txt: not an image" in curate.output
    assert cli("caption", concept, *common).exit_code == 0
    assert "generated 4 class images" in cli("prior", concept, *common).output
    assert "train: 6 steps" in cli("train", concept, *common).output
    assert cli("train", concept, *common, "--resume").exit_code == 0
    assert "clip_i" in cli("evaluate", concept, *common).output
    assert "registered toy-robot v1 @challenger" in cli("register", concept, *common).output
    assert "already registered as toy-robot v1" in cli("register", concept, *common).output


def test_run_does_all_six_stages(concept_dir, tmp_path):
    from components.io import ADAPTER_FILE, read_json

    params = tmp_path / "params.yaml"
    params.write_text(
        "prior: {num_images: 2, steps: 2, batch_size: 2}\n"
        "train: {max_steps: 2, batch_size: 1, rank: 2, alpha: 2, checkpoint_every: 2}\n"
        "evaluate: {seeds: [0], steps: 2, prompts: ['a photo of {instance}'], class_prompts: ['a {class_noun}']}\n"
        f"registry: {{tracking_uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n"
    )
    work = tmp_path / "work" / "toy-robot"
    result = cli("run", concept_dir / "concept.yaml", "--params", params, "--work-dir", tmp_path / "work")
    assert result.exit_code == 0, result.output
    for stage in ("curate", "caption", "prior", "train", "evaluate", "register"):
        assert f"done {stage} in" in result.output
    assert read_json(work / "curated" / "manifest.json")["accepted"] == 6
    assert len(read_json(work / "captions" / "captions.json")["entries"]) == 6
    assert len(read_json(work / "prior" / "manifest.json")["images"]) == 2
    assert read_json(work / "adapter" / "train.json")["steps"] == 2 and (work / "adapter" / ADAPTER_FILE).exists()
    assert {"clip_i", "clip_t", "prior_drift"} <= set(read_json(work / "eval" / "metrics.json")["metrics"])
    registered = read_json(work / "registered.json")
    version = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_model_version_by_alias(
        "toy-robot", "challenger"
    )
    assert (registered["model_name"], registered["version"]) == ("toy-robot", str(version.version))


@pytest.mark.slow
def test_run_on_an_sdxl_base_needs_nothing_but_base_model(concept_dir, params_file, tmp_path):
    """A new user's report (issue 14): an SDXL folder died in the prior stage with a raw traceback."""
    concept = concept_dir / "concept.yaml"
    concept.write_text(concept.read_text().replace("base_model: tiny-sd", "base_model: tiny-sdxl"))
    result = cli("run", concept, "--params", params_file, "--work-dir", tmp_path / "work")
    assert result.exit_code == 0, result.output
    assert "registry: models:/toy-robot@challenger = toy-robot v1" in result.output
    config = (tmp_path / "work" / "toy-robot" / "adapter" / "train_config.json").read_text()
    assert '"family": "sdxl"' in config


def test_a_folder_of_an_unsupported_pipeline_is_one_clear_error(concept_dir, params_file, tmp_path):
    model = tmp_path / "refiner"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionXLImg2ImgPipeline"}')
    concept = concept_dir / "concept.yaml"
    concept.write_text(concept.read_text().replace("base_model: tiny-sd", f"base_model: {model}"))
    result = cli("run", concept, "--params", params_file, "--work-dir", tmp_path / "work")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "StableDiffusionXLImg2ImgPipeline" in result.output and "StableDiffusionXLPipeline" in result.output


def test_bad_config_is_one_clear_error(concept_dir, tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("train:\n  max_step: 10\n")
    result = cli("curate", concept_dir / "concept.yaml", "--params", params, "--work-dir", tmp_path / "w")
    assert result.exit_code == 2
    assert "bad.yaml: key 'train.max_step'" in result.output and "Traceback" not in result.output


def test_too_few_photos_exit_code_and_message(concept_dir, params_file, tmp_path):
    for photo in sorted((concept_dir / "photos").iterdir())[1:]:
        photo.unlink()
    result = cli("curate", concept_dir / "concept.yaml", "--params", params_file, "--work-dir", tmp_path / "w")
    assert result.exit_code == 2 and "only 1 photo(s) accepted" in result.output


def test_flow_train_concept_refuses_an_unlisted_concept_with_what_to_do(tmp_path):
    (tmp_path / "params.yaml").write_text("concepts: [toy-robot]\n")
    result = cli("flow", "train-concept", "toy-white-diamond", "--repo", tmp_path)
    assert result.exit_code == 2
    assert "toy-white-diamond is not listed in" in result.output and "conceptlab demo --concept" in result.output


def test_missing_hub_model_names_the_model(concept_dir, params_file, tmp_path):
    concept = concept_dir / "concept.yaml"
    concept.write_text(concept.read_text().replace("base_model: tiny-sd", "base_model: nobody/no-such-model"))
    result = cli("curate", concept, "--params", params_file, "--work-dir", tmp_path / "w")
    assert result.exit_code == 2
    assert "nobody/no-such-model" in result.output and "HF_HUB_OFFLINE" in result.output


@pytest.mark.slow
def test_demo_runs_the_flows_then_skips_everything_on_a_second_run(tmp_path):
    """The README's demo as a subprocess on a git + DVC copy of the project, twice, on a concept folder
    that params.yaml `concepts` does not list yet (`demo --concept <folder>` lists it)."""
    from tests.conftest import FAST_FLOW_PARAMS, make_project_repo, run

    repo = make_project_repo(tmp_path / "repo", {**FAST_FLOW_PARAMS, "concepts": []}, track_photos_with_dvc=False)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    # The CLI must bring its own Prefect defaults (startup timeout, analytics off): no script sets them.
    for var in (
        "MLFLOW_TRACKING_URI",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    ):
        env.pop(var, None)

    def demo():
        proc = subprocess.run(
            [sys.executable, "-m", "components.cli", "demo", "--concept", "toy-robot", "--repo", str(repo)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stderr

    history = run(["git", "log", "--format=%H"], repo)
    first = demo()
    assert "note: added toy-robot to params.yaml `concepts`" in first
    assert "DVC ran: curate@toy-robot, caption@toy-robot, prior@toy-robot, train@toy-robot, evaluate@toy-robot" in first
    assert "gate vs base" in first and "mlflow ui" in first and "prefect server start" in first
    assert any((tmp_path / "home" / ".cache" / "conceptlab" / "dvc-remote").rglob("*")), "pushed to the local remote"
    second = demo()
    assert "DVC ran: nothing; skipped: curate@toy-robot" in second and "already @champion" in second
    assert "note: added" not in second, "listed once"
    assert run(["git", "log", "--format=%H"], repo) == history, "the demo leaves the git history alone"

    client = MlflowClient(tracking_uri=f"sqlite:///{repo}/mlflow.db")
    assert str(client.get_model_version_by_alias("toy-robot", "champion").version) == "1"
    assert len(client.search_model_versions("name = 'toy-robot'")) == 1

    from components.base_model import load_pipeline

    def render(pipe):
        return pipe(
            "a photo of sks robot",
            num_inference_steps=10,
            height=64,
            width=64,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images

    pipe = load_pipeline("tiny-sd")
    base = render(pipe)
    pipe.load_lora_weights(repo / "work" / "toy-robot" / "adapter")
    assert np.abs(render(pipe) - base).max() > 1e-4, "the trained adapter changes the output"
