"""Only the team gets in: the team topology's servers (infra/team.sh, real processes on loopback) with
authentication on. Anonymous requests are refused by both servers; MLflow's identities (created by
`infra/team.sh mlflow-users`) get exactly their share of the registry: the viewer reads, training
registers and sets `challenger`, and only the gate moves `champion`. No training: model versions are
created directly through the client, as each identity."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.team import topology

pytestmark = pytest.mark.slow

MODEL = "toy-purple-triangle"


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3_server):
    """Both servers with authentication, and the credentials of every identity (all random)."""
    import boto3

    tmp = tmp_path_factory.mktemp("auth")
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="mlflow-artifacts")
    creds = {
        "prefect": f"team:{secrets.token_urlsafe(16)}",
        "admin": secrets.token_urlsafe(16),
        **{user: secrets.token_urlsafe(16) for user in ("viewer", "training", "gate")},
    }
    prefect_db, mlflow_db = topology.create_database("auth_prefect"), topology.create_database("auth_mlflow")
    prefect = topology.start_prefect_server(prefect_db, tmp / "prefect", wait=False, auth_string=creds["prefect"])
    mlflow = topology.start_mlflow_server(
        mlflow_db, s3_server, "s3://mlflow-artifacts/auth", tmp / "mlflow", wait=False, admin_password=creds["admin"]
    )
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.wait_ready(), (prefect, mlflow)))
        admin_env = topology.base_env(
            MLFLOW_TRACKING_URI=mlflow.url,
            MLFLOW_TRACKING_USERNAME="admin",
            MLFLOW_TRACKING_PASSWORD=creds["admin"],
            **{f"MLFLOW_{user.upper()}_PASSWORD": creds[user] for user in ("viewer", "training", "gate")},
        )
        topology.team_command(topology.service_command("mlflow-users"), admin_env, timeout=300)
        yield prefect, mlflow, creds
    finally:
        for proc in (prefect, mlflow):
            proc.stop()
        prefect_db.drop()
        mlflow_db.drop()


def _status(url: str, method: str = "GET", user_password: str | None = None, body: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if user_password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(user_password.encode()).decode()
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_both_servers_refuse_requests_without_the_teams_credentials(team):
    prefect, mlflow, creds = team
    flows = f"{prefect.url}/flows/filter"
    assert _status(flows, "POST", body=b"{}") == 401
    assert _status(flows, "POST", "team:wrong", b"{}") == 401
    assert _status(flows, "POST", creds["prefect"], b"{}") == 200
    assert _status(f"{prefect.url}/health") == 200  # probes stay open

    models = f"{mlflow.url}/api/2.0/mlflow/registered-models/search"
    assert _status(models) == 401
    assert _status(models, user_password="viewer:wrong") == 401
    assert _status(models, user_password=f"viewer:{creds['viewer']}") == 200

    # The Prefect CLI (as clients and workers run it) authenticates through PREFECT_API_AUTH_STRING.
    cli = ["uv", "run", "--frozen", "prefect", "work-pool", "create", "auth-check", "--type", "process", "--overwrite"]
    env = topology.base_env(PREFECT_API_URL=prefect.url)
    refused = subprocess.run(cli, cwd=topology.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    topology.team_command(cli, {**env, "PREFECT_API_AUTH_STRING": creds["prefect"]}, timeout=300)


def _client(mlflow, user: str, password: str, monkeypatch):
    """An MlflowClient that sends ``user``'s credentials (MLflow reads them from the environment)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(mlflow.url)


def _refused(call) -> int:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as refusal:
        call()
    message = str(refusal.value)
    assert "403" in message or "PERMISSION_DENIED" in message, message
    return 403


def test_each_identity_gets_exactly_its_share_of_the_registry(team, monkeypatch):
    _, mlflow, creds = team

    training = _client(mlflow, "training", creds["training"], monkeypatch)
    experiment = training.create_experiment(f"auth-{os.getpid()}")
    run = training.create_run(experiment)
    training.log_param(run.info.run_id, "concept", MODEL)
    training.create_registered_model(MODEL)
    first = training.create_model_version(MODEL, f"runs:/{run.info.run_id}/adapter", run_id=run.info.run_id)
    second = training.create_model_version(MODEL, f"runs:/{run.info.run_id}/adapter", run_id=run.info.run_id)
    training.set_registered_model_alias(MODEL, "challenger", first.version)
    _refused(lambda: training.set_registered_model_alias(MODEL, "champion", first.version))
    _refused(lambda: training.delete_registered_model_alias(MODEL, "champion"))

    gate = _client(mlflow, "gate", creds["gate"], monkeypatch)
    gate.set_model_version_tag(MODEL, first.version, "gate.passed", "true")
    gate.set_registered_model_alias(MODEL, "champion", first.version)
    assert gate.get_model_version_by_alias(MODEL, "champion").version == first.version
    gate.set_registered_model_alias(MODEL, "champion", second.version)
    _refused(lambda: gate.delete_model_version(MODEL, first.version))  # EDIT, not MANAGE

    viewer = _client(mlflow, "viewer", creds["viewer"], monkeypatch)
    assert viewer.get_model_version_by_alias(MODEL, "champion").version == second.version
    assert viewer.get_run(run.info.run_id).data.params == {"concept": MODEL}
    assert {m.name for m in viewer.search_registered_models()} == {MODEL}
    _refused(lambda: viewer.set_registered_model_alias(MODEL, "challenger", second.version))
    _refused(lambda: viewer.set_registered_model_alias(MODEL, "champion", first.version))
    _refused(lambda: viewer.delete_model_version(MODEL, first.version))
    _refused(lambda: viewer.delete_registered_model(MODEL))
    _refused(lambda: viewer.create_run(experiment))

    # The registry is as the gate left it: nothing the refused identities tried went through.
    assert gate.get_model_version_by_alias(MODEL, "champion").version == second.version
    assert gate.get_model_version_by_alias(MODEL, "challenger").version == first.version
    assert {v.version for v in gate.search_model_versions(f"name='{MODEL}'")} == {first.version, second.version}


def test_no_credential_in_any_mlflow_or_prefect_record(team, monkeypatch, tmp_path):
    """Every credential is searched for in every record; a planted sentinel proves each place is read."""
    import datetime

    from tests.team.credential_scan import find_credentials

    prefect, mlflow, creds = team
    sentinel = f"sentinel-{secrets.token_hex(8)}"
    training = _client(mlflow, "training", creds["training"], monkeypatch)
    run = training.create_run(training.create_experiment(f"scan-{os.getpid()}"))
    training.log_param(run.info.run_id, "planted", sentinel)
    training.set_tag(run.info.run_id, "planted", sentinel)
    (tmp_path / "notes.txt").write_text(f"planted {sentinel}\n")
    training.log_artifact(run.info.run_id, str(tmp_path / "notes.txt"))
    training.set_terminated(run.info.run_id)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    log = [{"name": "auth-test", "level": 20, "message": f"planted {sentinel}", "timestamp": now}]
    artifact = {"key": "planted", "type": "markdown", "data": f"planted {sentinel}"}
    for path, body in (("/logs/", log), ("/artifacts/", artifact)):
        assert _status(f"{prefect.url}{path}", "POST", creds["prefect"], json.dumps(body).encode()) in (200, 201)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", creds["admin"])
    found = find_credentials(mlflow.url, prefect.url, creds["prefect"], {**creds, "sentinel": sentinel})
    planted = [line for line in found if line.endswith(": sentinel")]
    for place in (
        r"run \S+ params",
        r"run \S+ tags",
        r"run \S+ artifact notes.txt",
        "prefect logs",
        "prefect artifacts",
    ):
        assert any(re.match(place, line) for line in planted), (place, found)
    assert [line for line in found if not line.endswith("sentinel")] == []
