"""The team topology for real, as processes on loopback: a Prefect server and an MLflow server on
PostgreSQL, MLflow artifacts and the DVC remote on S3 (moto's server), a bare git repository as the
team's remote, a process worker with an environment of its own. The test runs the commands
infra/README.md shows (topology.TEAM_COMMANDS) and checks the outcome from outside: the MLflow
registry, a fresh clone + `dvc pull` at the registered commit, and the Prefect API. Authentication is on,
as the shipped defaults have it: each machine has its own identity (the GPU worker `training`, the CPU
worker `gate`, the checks `viewer`), and afterwards no credential is found in any MLflow or Prefect record."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.team import topology

pytestmark = pytest.mark.slow

CONCEPT = topology.TRAIN_RUN[1].removeprefix("concept=")
# Committed in the team's repository: a few steps of everything, so one run takes seconds, and a gate
# that passes an adapter this short (the quality tests hold the gate to learning).
TEAM_PARAMS = {
    "concepts": [CONCEPT],
    "promotion": {"min_clip_i_gain": -1.0, "clip_i_margin": 1.0, "clip_t_margin": 1.0, "max_prior_drift": 2.0},
    "prior": {"num_images": 2, "steps": 2, "batch_size": 2},
    "train": {"max_steps": 4, "batch_size": 1, "checkpoint_every": 2},
    "evaluate": {
        "seeds": [0],
        "steps": 2,
        "prompts": ["a photo of a {instance}"],
        "class_prompts": ["a photo of a {class_noun}"],
    },
}


# Random per run, like a secret store's: the credential scan looks for each value.
CREDS = {
    "prefect": f"team:{secrets.token_urlsafe(16)}",
    **{user: secrets.token_urlsafe(16) for user in ("admin", "viewer", "training", "gate")},
}


def _mlflow_identity(user: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": CREDS[user]}


def _api(url: str, path: str, body: dict | None = None) -> dict | list:
    auth = base64.b64encode(CREDS["prefect"].encode()).decode()
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_team_topology_trains_registers_and_keeps_lineage(tmp_path, s3_server, monkeypatch):
    import boto3
    from mlflow import MlflowClient

    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    prefix = uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", endpoint_url=s3_server, **_credentials())
    for bucket in ("dvc-store", "mlflow-artifacts"):
        s3.create_bucket(Bucket=bucket)
    prefect_db = topology.create_database("conceptlab_team_prefect")
    mlflow_db = topology.create_database("conceptlab_team_mlflow")
    started: list[topology.Process] = []
    try:
        # The two servers start in parallel (each migrates its own PostgreSQL database).
        prefect = topology.start_prefect_server(
            prefect_db, tmp_path / "prefect", wait=False, auth_string=CREDS["prefect"]
        )
        started.append(prefect)
        mlflow = topology.start_mlflow_server(
            mlflow_db,
            s3_server,
            f"s3://mlflow-artifacts/{prefix}",
            tmp_path / "mlflow",
            wait=False,
            admin_password=CREDS["admin"],
        )
        started.append(mlflow)
        remote = topology.make_bare_remote(tmp_path / "git", TEAM_PARAMS, f"s3://dvc-store/{prefix}", s3_server)
        worker_venv, _ = topology.make_worker_env(tmp_path / "worker-venv")
        lap("bare remote + worker environment")
        prefect.wait_ready()
        mlflow.wait_ready()
        lap("servers ready")

        env = topology.team_env(prefect, mlflow, s3_server, remote.url, PREFECT_API_AUTH_STRING=CREDS["prefect"])
        users = {f"MLFLOW_{u.upper()}_PASSWORD": CREDS[u] for u in ("viewer", "training", "gate")}
        topology.team_command(
            topology.service_command("mlflow-users"), {**env, **_mlflow_identity("admin"), **users}, timeout=300
        )
        topology.deploy(env)
        lap("users + deploy")
        worker = topology.start_worker(
            "conceptlab-gpu", {**env, **_mlflow_identity("training")}, worker_venv, tmp_path / "worker"
        )
        started.append(worker)
        # retrain-nightly runs on the CPU pool: on the GPU worker's only slot it would wait for its own runs.
        # Its worker is the gate's identity: the promote runs it starts are the only ones that move champion.
        cpu_env = {**env, **_mlflow_identity("gate")}
        started.append(topology.start_worker("conceptlab-cpu", cpu_env, worker_venv, tmp_path / "cpu-worker"))
        lap("worker start")

        # While the worker trains, a colleague pushes an unrelated commit: the run's lineage commit is
        # rebased over it before it is pushed and registered.
        with ThreadPoolExecutor(1) as pool:
            training = pool.submit(topology.run_deployment, *topology.TRAIN_RUN[:1], env, *topology.TRAIN_RUN[1:])
            _wait_until_running(prefect.url, training)
            colleague = _push_unrelated_commit(remote)
            train_run = training.result()
        lap("train-concept run")
        retrain_run = topology.run_deployment(*topology.RETRAIN_RUN, env)
        lap("retrain run")

        # MLflow, from outside: one version, challenger and (after retrain's gate) champion.
        for key, value in _mlflow_identity("viewer").items():
            monkeypatch.setenv(key, value)
        client = MlflowClient(tracking_uri=mlflow.url)
        versions = client.search_model_versions(f"name = '{CONCEPT}'")
        assert [v.version for v in versions] == ["1"], "retrain found the same adapter: no second version"
        registered = client.get_registered_model(CONCEPT)
        assert registered.aliases == {"challenger": "1", "champion": "1"}
        version = client.get_model_version(CONCEPT, "1")
        commit = version.tags["conceptlab.git_commit"]
        assert commit == remote.head(), "the version names the commit the team's remote holds"
        assert topology._git(["rev-parse", f"{commit}^"], remote.path).strip() == colleague, "rebased"

        # The adapter through git + DVC alone: a new clone at that commit, `dvc pull` from S3.
        clone = remote.clone(tmp_path / "new-member", rev=commit)
        _dvc_pull(clone, env)
        adapter = clone / "work" / CONCEPT / "adapter" / "pytorch_lora_weights.safetensors"
        assert _sha256(adapter) == version.tags["conceptlab.adapter_sha256"]

        # Prefect, from outside: both runs Completed, the train run's report and metrics artifacts.
        for run_id in (train_run, retrain_run):
            state = _api(prefect.url, f"/flow_runs/{run_id}")["state"]
            assert state["type"] == "COMPLETED", state
        artifacts = _api(prefect.url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [train_run]}}})
        assert {a["key"] for a in artifacts} >= {f"{CONCEPT}-report", f"{CONCEPT}-metrics"}

        # No credential in any MLflow param, tag or artifact, or any Prefect log line or artifact.
        from tests.team.credential_scan import find_credentials

        for key, value in _mlflow_identity("admin").items():
            monkeypatch.setenv(key, value)
        assert find_credentials(mlflow.url, prefect.url, CREDS["prefect"], CREDS) == []
        lap("checks from outside")
    finally:
        for proc in reversed(started):
            proc.stop()
        prefect_db.drop()
        mlflow_db.drop()
        print("team test timings (s):", json.dumps(timings))


def _wait_until_running(api: str, training, timeout: float = 900) -> None:
    """Until the train-concept flow run is Running: its worker has cloned the repository."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
        if _api(api, "/flow_runs/filter", body):
            return
        if training.done():
            training.result()  # raises what went wrong
            raise AssertionError("the run finished before the test saw it Running")
        time.sleep(1)
    raise AssertionError(f"no flow run was Running after {timeout:.0f} s")


def _push_unrelated_commit(remote: topology.BareRemote) -> str:
    notes = remote.source / "NOTES.md"
    notes.write_text("A colleague's note, pushed while the worker trains.\n")
    topology._git(["add", "NOTES.md"], remote.source)
    topology._git(["commit", "-q", "-m", "a colleague's unrelated commit"], remote.source)
    topology._git(["push", "-q", "origin", "main"], remote.source)
    return topology._git(["rev-parse", "HEAD"], remote.source).strip()


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _dvc_pull(clone: Path, env: dict[str, str]) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "pull", f"train@{CONCEPT}"], cwd=clone, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
