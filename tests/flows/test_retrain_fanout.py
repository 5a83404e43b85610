"""retrain's fan-out and its failure isolation, under the Prefect test harness: train-concept is served
as a deployment by a `flow.serve` process (a runner: the same dispatch path as a worker, minus the
clone), retrain starts one run of it per due concept, and a concept whose photos are all rejected is
named in the summary while the other is trained and gated. Then the same without a deployment (the
local path: subflows in this checkout), the failing concept first. The real team topology (server, workers, a clone per run)
runs in benchmarks/fanout.py."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from flows.retrain import retrain
from tests.conftest import make_project_repo, run
from tests.flows.test_flows import FLOW_PARAMS, edit_params

ROOT = Path(__file__).resolve().parents[2]
BROKEN = "toy-broken"
pytestmark = pytest.mark.slow


@pytest.fixture
def two_concepts(tmp_path, prefect_harness, flow_env, mlflow_server):
    """The sample concept and a copy of it whose photos are all too small (curate rejects each one)."""
    from mlflow.exceptions import MlflowException
    from PIL import Image

    # The session's MLflow server holds other tests' toy-robot versions; this test's story starts at v1.
    with contextlib.suppress(MlflowException):
        MlflowClient(tracking_uri=mlflow_server).delete_registered_model("toy-robot")
    repo = make_project_repo(tmp_path / "repo", {**FLOW_PARAMS, "concepts": [BROKEN, "toy-robot"]})
    shutil.copytree(repo / "concepts/toy-robot", repo / f"concepts/{BROKEN}", ignore=shutil.ignore_patterns("*.dvc"))
    concept = repo / f"concepts/{BROKEN}/concept.yaml"
    concept.write_text(concept.read_text().replace("name: toy-robot", f"name: {BROKEN}"))
    for photo in (repo / f"concepts/{BROKEN}/photos").iterdir():
        Image.open(photo).resize((16, 16)).save(photo)  # under curate.min_side
    run(["dvc", "add", "-q", f"concepts/{BROKEN}/photos"], repo)
    run(["dvc", "remote", "add", "-d", "team", "s3://dvc-store/fanout"], repo)
    run(["dvc", "remote", "modify", "team", "endpointurl", flow_env.meta.endpoint_url], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a second concept, and the S3 remote"], repo)
    return repo


@pytest.fixture
def served_train_concept(two_concepts, tmp_path):
    """train-concept served (2 runs at once) by a process of its own, against the harness's API."""
    name = f"fanout-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "from flows.train_concept import train_concept\n"
        f"train_concept.serve(name={name!r}, parameters={{'repo': {str(two_concepts)!r}}}, limit=2)\n"
    )
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deployment = f"train-concept/{name}"
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 300
        while True:  # serve() registers the deployment once its process has imported the flow
            try:
                client.read_deployment_by_name(deployment)
                break
            except ObjectNotFound:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(2)
    yield deployment
    proc.terminate()
    proc.wait(timeout=60)


def summary_rows():
    return {row["concept"]: row for row in json.loads(Artifact.get("retrain-summary").data)}


def test_fan_out_names_the_failing_concept_and_finishes_the_others(
    two_concepts, served_train_concept, mlflow_server, tmp_path
):
    client = MlflowClient(tracking_uri=mlflow_server)
    state = retrain(repo=str(two_concepts), fan_out=served_train_concept, poll_s=1.0, return_state=True)
    results = state.result(raise_on_failure=False)
    log = (tmp_path / "serve.log").read_text()
    assert results["toy-robot"]["outcome"] == "trained+promoted v1", log[-3000:]
    assert (
        results[BROKEN]["outcome"].startswith("failed: ") and "only 0 photo(s) accepted" in results[BROKEN]["outcome"]
    )
    assert results["toy-robot"]["flow_run"] != results[BROKEN]["flow_run"] != ""
    assert state.is_failed() and state.message == f"1 of 2 concepts failed: {BROKEN}"
    assert {c: r["outcome"] for c, r in summary_rows().items()} == {c: r["outcome"] for c, r in results.items()}
    assert str(client.get_model_version_by_alias("toy-robot", "champion").version) == "1"
    assert BROKEN not in [m.name for m in client.search_registered_models()], "nothing registered for it"
    # The fanned-out runs ran in the served process, not in this one: this checkout has no workspace.
    assert (two_concepts / "work/toy-robot/adapter").exists()  # the runner's repo parameter is this repo

    # The local path (no deployment): one subflow after another in this checkout. The broken concept is
    # listed first and fails first; toy-robot still runs after it. A new evaluation setting makes
    # toy-robot due (evaluate only); the same adapter is v1, already champion: kept.
    edit_params(two_concepts, "evaluate", guidance_scale=6.0)
    run(["git", "commit", "-qam", "guidance 6"], two_concepts)
    state = retrain(repo=str(two_concepts), return_state=True)
    results = state.result(raise_on_failure=False)
    assert list(results) == [BROKEN, "toy-robot"]
    assert results["toy-robot"] == {
        "outcome": "trained+kept v1 (already champion)",
        "why": "changed: evaluate@toy-robot",
        "flow_run": results["toy-robot"]["flow_run"],
    }
    assert "only 0 photo(s) accepted" in results[BROKEN]["outcome"]
    assert state.is_failed() and summary_rows()[BROKEN]["outcome"] == results[BROKEN]["outcome"]
