"""One machine, no work pools: serve prefect.yaml's deployments from this checkout.

    uv run python -m flows.serve            # cron from $CONCEPTLAB_RETRAIN_CRON, default prefect.yaml's

The deployments (names, flows, parameters, schedules, concurrency) are read from prefect.yaml, so they
are declared once; a team uses prefect.yaml itself (work pools, workers), see infra/README.md.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import yaml
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def deployments(prefect_yaml: Path = PREFECT_YAML) -> list[RunnerDeployment]:
    """prefect.yaml's deployments as runner deployments; $CONCEPTLAB_RETRAIN_CRON replaces their cron."""
    cron_override = os.environ.get("CONCEPTLAB_RETRAIN_CRON")
    built = []
    for spec in yaml.safe_load(prefect_yaml.read_text())["deployments"]:
        path, name = spec["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        schedules = [
            Cron(cron_override or s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules", [])
        ]
        built.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                parameters=spec.get("parameters", {}),
                schedules=schedules,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return built


def main() -> None:
    from prefect import serve

    serve(*deployments())


if __name__ == "__main__":
    main()
