"""Real services for the flow tests: Prefect's test harness, an S3 endpoint (moto server mode) and an
MLflow tracking server process whose artifact store is that S3 endpoint."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from components.environment import apply_embedded_defaults
from tests.conftest import _free_port

apply_embedded_defaults()  # as every entry point does, before Prefect loads


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def s3_vars(s3_server) -> dict[str, str]:
    """The S3 endpoint's variables (buckets created once); applied per test by `flow_env`."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    for bucket in ("dvc-store", "mlflow-artifacts"):
        s3.create_bucket(Bucket=bucket)
    return env


@pytest.fixture(scope="session")
def mlflow_server(s3_vars, tmp_path_factory):
    """`mlflow server` as a real process: SQLite backend, artifacts proxied to the S3 endpoint."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder}/mlflow.db",
            "--artifacts-destination",
            "s3://mlflow-artifacts/team",
            "--workers",
            "1",
        ],
        stdout=open(folder / "server.log", "w"),
        stderr=subprocess.STDOUT,
        # No huey job consumers: seven idle processes that each burn a fifth of a core.
        env={**os.environ, **s3_vars, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300  # a fresh SQLite store's migrations: 126 s measured on a busy 2-core box
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text()[-3000:]) from None
            time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start in 300 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def s3_env(s3_vars, monkeypatch):
    """This test's process (and the DVC commands it starts) pointed at the S3 endpoint."""
    import boto3

    for key, value in s3_vars.items():
        monkeypatch.setenv(key, value)
    return boto3.client("s3")


@pytest.fixture
def flow_env(s3_env, mlflow_server, monkeypatch):
    """The team setup, for one test: MLflow server via MLFLOW_TRACKING_URI, S3 for DVC and artifacts."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return s3_env
