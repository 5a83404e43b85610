"""Shared fixtures: tiny real models built once per session, a sample concept, fast params.

Nothing here is mocked: the models are real diffusers/transformers/open_clip classes with random
weights, built from configs and loaded through from_pretrained like any hub checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.samples import FAST_FLOW_PARAMS  # noqa: F401  (the flow tests import it from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items) -> None:
    """The quality tests first: the longest module (one xdist worker trains every toy base's variants),
    so with scripts/test.sh's two workers the rest of the suite runs beside it rather than after it."""
    items.sort(key=lambda item: item.get_closest_marker("quality") is None)  # stable: order kept within


@pytest.fixture(scope="session", autouse=True)
def models_dir(tmp_path_factory) -> Path:
    """Tiny models are built once per test session (fixed seeds) into a temporary folder."""
    folder = Path(os.environ.get("CONCEPTLAB_TEST_MODELS_DIR") or tmp_path_factory.mktemp("models"))
    os.environ["CONCEPTLAB_MODELS_DIR"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def _fresh_mlflow_uri(monkeypatch):
    """mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI, which conceptlab lets win over
    params.yaml (a team server). Each test starts without it, so no test inherits another's store."""
    # setenv first, so that the teardown also removes a URI the test's own code exported.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


@pytest.fixture
def concept_dir(tmp_path) -> Path:
    from components.samples import write_sample_concept

    write_sample_concept(tmp_path / "concept")
    return tmp_path / "concept"


FAST_PARAMS = """\
curate: {min_images: 3}
prior: {num_images: 4, steps: 4, batch_size: 4}
train: {max_steps: 6, batch_size: 1, learning_rate: 0.005, rank: 4, alpha: 8, checkpoint_every: 2,
        checkpoints_total_limit: 2}
evaluate: {seeds: [0, 1], steps: 4, prompts: ["a photo of {instance}", "{instance} on the beach"],
           class_prompts: ["a photo of a {class_noun}"]}
"""


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(FAST_PARAMS + f"registry: {{tracking_uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n")
    return path


@pytest.fixture
def cfg(concept_dir, params_file):
    from components.config import load_config

    return load_config(concept_dir / "concept.yaml", params_file)


@pytest.fixture
def layout(tmp_path, cfg):
    from components.layout import ConceptLayout

    return ConceptLayout(tmp_path / "work", cfg.concept.name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP endpoint on loopback (moto's server mode)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """boto3 pointed at the moto endpoint through the standard environment variables."""
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return boto3.client("s3")


ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", ".gitignore", ".dvcignore", "components", "models", "concepts/toy-robot")


def run(cmd: list[str], cwd: Path, **kwargs) -> str:
    import subprocess
    import sys

    if cmd[0] == "dvc":
        cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def make_project_repo(dest: Path, params_overrides: dict, track_photos_with_dvc: bool = True) -> Path:
    """A temporary git + DVC copy of this project: dvc.yaml, params.yaml (with overrides), the code
    the stages depend on, and the sample concept, its photos tracked by DVC."""
    import shutil

    import yaml

    from components.config import deep_merge

    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), params_overrides)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "ci@conceptlab.test"], dest)
    run(["git", "config", "user.name", "conceptlab tests"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    if track_photos_with_dvc:
        run(["dvc", "add", "-q", "concepts/toy-robot/photos"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "project"], dest)
    return dest
