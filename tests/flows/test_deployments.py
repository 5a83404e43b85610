"""prefect.yaml points at real flows with valid schedules and the concurrency the design needs."""

import importlib
from pathlib import Path

import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_entrypoint_is_a_flow_and_schedules_parse():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    assert {"retrain-nightly", "train-concept", "promote"} <= names
    for deployment in config["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, func), Flow), deployment["entrypoint"]
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        if deployment["name"] != "promote":
            assert deployment["concurrency_limit"] == 1, "one writer per DVC repository"


def test_serve_module_builds_the_same_deployments():
    from flows.promote import promote
    from flows.retrain import retrain

    deployment = retrain.to_deployment(name="retrain-nightly", cron="0 3 * * *", concurrency_limit=1)
    assert deployment.schedules[0].schedule.cron == "0 3 * * *"
    assert promote.to_deployment(name="promote").name == "promote"
