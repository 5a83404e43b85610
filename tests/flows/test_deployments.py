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
    deployments = {d["name"]: d for d in config["deployments"]}
    # One nightly fan-out at a time; its train-concept runs each clone the repository, so they are
    # bounded by worker slots (GPUs), not a deployment limit, and it waits on another pool than theirs.
    assert deployments["retrain-nightly"]["concurrency_limit"] == 1
    assert "concurrency_limit" not in deployments["train-concept"]
    assert deployments["retrain-nightly"]["parameters"]["fan_out"] == "train-concept/train-concept"
    # The gate runs as the promote deployment (the gate identity), never inside the GPU training job.
    assert deployments["retrain-nightly"]["parameters"]["gate_deployment"] == "promote/promote"
    assert deployments["promote"]["work_pool"]["name"] == "conceptlab-cpu"
    assert deployments["retrain-nightly"]["work_pool"] != deployments["train-concept"]["work_pool"]


def test_serve_module_builds_the_same_deployments(monkeypatch):
    """`python -m flows.serve` serves what prefect.yaml declares: flows, parameters, schedules, concurrency."""
    from flows import serve

    monkeypatch.chdir(ROOT)  # entrypoints are relative to the checkout serve runs from
    monkeypatch.delenv("CONCEPTLAB_RETRAIN_CRON", raising=False)
    declared = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    built = {d.name: d for d in serve.deployments()}
    assert built.keys() == declared.keys() == {"retrain-nightly", "train-concept", "promote"}
    for name, spec in declared.items():
        deployment = built[name]
        assert deployment.entrypoint == spec["entrypoint"]
        assert deployment.parameters == spec["parameters"]
        assert {"repo": "."}.items() <= spec["parameters"].items()
        assert spec["parameters"].get("git_push", False) is (name != "promote")
        assert deployment.concurrency_limit == spec.get("concurrency_limit")
        schedules = [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules]
        assert schedules == [(s["cron"], s["timezone"]) for s in spec.get("schedules", [])]
    assert built["retrain-nightly"].schedules[0].schedule.cron == "0 3 * * *"
    assert built["retrain-nightly"].concurrency_limit == 1

    monkeypatch.setenv("CONCEPTLAB_RETRAIN_CRON", "30 1 * * 1")
    retrain = next(d for d in serve.deployments() if d.name == "retrain-nightly")
    assert retrain.schedules[0].schedule.cron == "30 1 * * 1"


def test_pull_steps_clone_install_and_pull_the_data(tmp_path, prefect_harness, monkeypatch):
    """prefect.yaml's pull steps, run by Prefect's own step runner as a worker runs them, against a
    bare git repository (file:// URL in CONCEPTLAB_GIT_URL) whose DVC remote is a local folder."""
    import asyncio
    import os
    import shutil

    from dvc.repo import Repo
    from prefect.deployments.steps.core import run_steps

    from tests.conftest import run

    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "the pull steps call `uv`: run the tests through `uv run` (./scripts/test.sh)"
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md", "components", "flows"):  # what `uv sync` installs
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    (source / "data").mkdir()
    (source / "data" / "marker.bin").write_bytes(os.urandom(64))
    run(["git", "init", "-q", "-b", "main"], source)
    dvc = Repo.init(str(source))  # in process: each `dvc` process costs seconds to start
    with dvc.config.edit() as config:
        config["core"].update({"analytics": False, "remote": "store"})
        config["remote"]["store"] = {"url": str(tmp_path / "dvc-remote")}
    dvc.add(str(source / "data"))
    dvc.push()
    dvc.close()
    run(["git", "add", "-A"], source)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "code and data"], source)
    run(["git", "clone", "-q", "--bare", str(source), str(tmp_path / "conceptlab.git")], tmp_path)

    monkeypatch.setenv("CONCEPTLAB_GIT_URL", (tmp_path / "conceptlab.git").as_uri())
    monkeypatch.setenv("PATH", str(Path(uv).parent) + os.pathsep + os.environ["PATH"])
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):  # the clone gets its own environment here
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "worker")  # git_clone clones into the working directory

    steps = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]
    outputs = asyncio.run(run_steps(steps))

    clone = Path.cwd()
    assert clone == (tmp_path / "worker" / outputs["clone"]["directory"]).resolve()
    assert run(["git", "rev-parse", "HEAD"], clone) == run(["git", "rev-parse", "HEAD"], source)
    assert (clone / ".venv" / "bin" / "conceptlab").exists(), "`uv sync` installed the cloned revision"
    marker = clone / "data" / "marker.bin"
    assert marker.read_bytes() == (source / "data" / "marker.bin").read_bytes(), "`dvc pull` restored the data"
