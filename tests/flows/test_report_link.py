"""The train-concept flow's Prefect markdown artifact links to the HTML report: the workspace file
with a local MLflow store (here), the evaluation run's page in the MLflow UI with a tracking server
(tests/flows/test_flows.py)."""

from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from prefect import flow
from prefect.artifacts import Artifact

from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_register, run_train
from flows.common import ConceptContext
from flows.dvc_repo import ReproReport
from flows.train_concept import publish

pytestmark = pytest.mark.slow  # Prefect's test server starts once per session: minutes on a busy machine


def test_the_report_artifact_links_to_report_html(prefect_harness, cfg, layout, tmp_path):
    for stage in (run_curate, run_caption, run_prior, run_train, run_evaluate):
        stage(cfg, layout)
    registration = run_register(cfg, layout)
    ctx = ConceptContext(repo=tmp_path, cfg=cfg, layout=layout, tracking_uri=registration.tracking_uri)

    @flow
    def publish_only():
        publish(ctx, registration, ReproReport(ran=["evaluate@toy-robot"], skipped=[], output=""))

    publish_only()
    markdown = Artifact.get("toy-robot-report").data
    link = markdown.split("(report.html): numbers, grid and every sample](", 1)[1].split(")", 1)[0]
    assert urlparse(link).scheme == "file"
    path = url2pathname(urlparse(link).path)
    assert path == str(layout.evaluation / "report.html")
    assert open(path, encoding="utf-8").read().startswith("<!DOCTYPE html>")
