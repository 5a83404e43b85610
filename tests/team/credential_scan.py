"""Where a credential leaked: every MLflow param, tag and artifact (runs of every experiment, registered
models and versions) and every Prefect log line, artifact, flow run, deployment and variable, searched for
each credential value. Reads as an identity that may see everything (the MLflow admin, the Prefect
auth string). Returns "where: which credential" lines; empty means nothing leaked."""

from __future__ import annotations

import base64
import json
import tempfile
import urllib.request
from pathlib import Path


def find_credentials(mlflow_url: str, prefect_url: str, prefect_auth: str, values: dict[str, str]) -> list[str]:
    """``values``: credential name -> value. MLflow is read with the credentials in the environment
    (MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    found: list[str] = []

    def check(where: str, text: str) -> None:
        found.extend(f"{where}: {name}" for name, value in values.items() if value and value in text)

    _scan_mlflow(mlflow_url, check)
    _scan_prefect(prefect_url, prefect_auth, check)
    return found


def _scan_mlflow(url: str, check) -> None:
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(url)
    for experiment in client.search_experiments():
        check(f"experiment {experiment.name} tags", json.dumps(experiment.tags))
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            rid = run.info.run_id
            check(f"run {rid} params", json.dumps(run.data.params))
            check(f"run {rid} tags", json.dumps(run.data.tags))
            with tempfile.TemporaryDirectory() as tmp:
                if client.list_artifacts(rid):
                    download_artifacts(run_id=rid, dst_path=tmp, tracking_uri=url)
                for path in Path(tmp).rglob("*"):
                    if path.is_file():
                        check(f"run {rid} artifact {path.relative_to(tmp)}", path.read_bytes().decode("latin-1"))
    for model in client.search_registered_models():
        check(f"model {model.name} tags", json.dumps(model.tags))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            check(f"model {model.name} v{version.version}", json.dumps({**version.tags, "source": version.source}))


def _scan_prefect(url: str, auth: str, check) -> None:
    header = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(), "Content-Type": "application/json"}

    def post_all(path: str):
        offset = 0
        while True:
            body = json.dumps({"limit": 200, "offset": offset}).encode()
            request = urllib.request.Request(f"{url}{path}", data=body, headers=header, method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                page = json.loads(response.read())
            yield from page
            if len(page) < 200:
                return
            offset += 200

    for kind in ("logs", "artifacts", "flow_runs", "deployments", "variables"):
        for item in post_all(f"/{kind}/filter"):
            check(f"prefect {kind} {item.get('id')}", json.dumps(item))
