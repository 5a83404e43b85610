"""Failure drills: what a team's runs meet, staged with real processes and measured.

The S3 endpoint (moto's HTTP server) goes away during `dvc push`; the MLflow server process is
killed during register; two demos of one concept start 3 s apart; a worker is killed mid-training.
Each drill prints a `drill:` line with what it measured (attempts, seconds to recover, versions,
resumed step): run with `-s` to read them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from components.config import deep_merge
from components.io import ADAPTER_FILE, sha256_file
from flows import dvc_repo
from tests.conftest import FAST_FLOW_PARAMS, _free_port, make_project_repo, run

OPEN_GATE = {"min_clip_i_gain": -2.0, "clip_i_margin": 2.0, "clip_t_margin": 2.0, "max_prior_drift": 2.0}
FLOW_PARAMS = deep_merge(FAST_FLOW_PARAMS, {"promotion": OPEN_GATE})
CONCEPT = "toy-robot"


def drill(name: str, **measured) -> None:
    print(f"drill: {name}: " + json.dumps(measured))


def head(repo: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], repo).strip()


def registered_versions(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    if CONCEPT not in [m.name for m in client.search_registered_models()]:
        return []
    return client.search_model_versions(f"name = '{CONCEPT}'")


def with_local_remote(repo: Path, folder: Path) -> Path:
    run(["dvc", "remote", "add", "-d", "local", str(folder)], repo)
    run(["git", "commit", "-qam", "a local DVC remote"], repo)
    return repo


def wait_until(condition, timeout: float, what: str, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def descendants_running(pattern: list[str]) -> list[psutil.Process]:
    """This test process's descendants whose command line contains ``pattern`` in order."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if any(cmd[i : i + len(pattern)] == pattern for i in range(len(cmd))):
            found.append(proc)
    return found


# --- 1. The S3 endpoint down during `dvc push` ---------------------------------------------------


class S3Endpoint:
    """moto's S3 server on a fixed port, stopped and started again like a real endpoint. moto keeps
    its buckets in this process's memory, so what was stored survives the restart, as on real S3."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server._server.server_close()  # moto's stop() leaves the socket listening: close it
            self.server = None


class PushWatcher(threading.Thread):
    """Records each `dvc push` process the flow starts (one per attempt of the push task), and
    calls ``after_first`` once the first attempt has failed."""

    def __init__(self, after_first=None) -> None:
        super().__init__(daemon=True)
        self.after_first = after_first
        self.attempts: dict[int, list[float]] = {}  # pid -> [started, ended]
        self.back_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.time()
            live = {p.pid for p in descendants_running(["-m", "dvc", "push"])}
            for pid in live - set(self.attempts):
                self.attempts[pid] = [now, 0.0]
            for pid, span in self.attempts.items():
                if pid not in live and not span[1]:
                    span[1] = now
            if self.after_first and self.back_at is None and any(s[1] for s in self.attempts.values()):
                self.after_first()
                self.back_at = time.time()
            time.sleep(0.05)

    def stop(self) -> list[list[float]]:
        self.done.set()
        self.join()
        return sorted(self.attempts.values())


@pytest.mark.slow
def test_s3_down_during_dvc_push(tmp_path, prefect_harness, monkeypatch):
    from flows.train_concept import train_concept

    endpoint = S3Endpoint()
    endpoint.start()
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint.url)
    s3.create_bucket(Bucket="drill-dvc-store")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    repo = make_project_repo(tmp_path / "repo", FLOW_PARAMS)
    run(["dvc", "remote", "add", "-d", "team", "s3://drill-dvc-store/conceptlab"], repo)
    run(["dvc", "remote", "modify", "team", "endpointurl", endpoint.url], repo)
    run(["git", "commit", "-qam", "S3 remote"], repo)
    dvc_repo.repro(repo, CONCEPT)  # the stages first: the flow's repro skips them, the drill is the push
    start = head(repo)

    try:
        # a. The endpoint never comes back: every attempt fails, the flow stops before commit and
        # register; nothing half-written is recorded.
        endpoint.stop()
        watcher = PushWatcher()
        watcher.start()
        began = time.time()
        with pytest.raises(dvc_repo.DvcError, match="push"):
            train_concept(CONCEPT, repo=str(repo))
        gave_up_after = time.time() - began
        attempts = watcher.stop()
        assert len(attempts) == 4, "the first attempt and 3 retries"
        assert head(repo) == start, "no commit names data the remote lacks"
        assert registered_versions(tracking) == [], "no model version"
        assert not (repo / "work" / CONCEPT / "registered.json").exists()
        drill(
            "s3 down, never back",
            push_attempts=len(attempts),
            seconds_per_attempt=[round(e - s, 1) for s, e in attempts],
            flow_failed_after_s=round(gave_up_after, 1),
            versions=0,
        )

        # b. The endpoint comes back (same port) after the first attempt failed: a retry pushes,
        # the run commits dvc.lock and registers v1.
        watcher = PushWatcher(after_first=endpoint.start)
        watcher.start()
        began = time.time()
        result = train_concept(CONCEPT, repo=str(repo))
        finished = time.time()
        attempts = watcher.stop()
    finally:
        endpoint.stop()
    assert result["ran"] == [] and result["registration"]["version"] == "1"
    assert len(attempts) >= 2 and watcher.back_at is not None
    versions = registered_versions(tracking)
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].tags["conceptlab.git_commit"] == head(repo) != start
    adapter_md5 = dvc_repo.lock_hashes(repo, CONCEPT)["dvc.train.adapter.md5"].removesuffix(".dir")
    endpoint.start()
    try:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="drill-dvc-store").get("Contents", [])]
    finally:
        endpoint.stop()
    assert any(adapter_md5[2:] in key for key in keys), "the adapter's DVC object reached S3"
    drill(
        "s3 down, back during the retries",
        push_attempts=len(attempts),
        endpoint_down_s=round(watcher.back_at - began, 1),
        pushed_after_back_s=round(attempts[-1][1] - watcher.back_at, 1),
        recovered_after_back_s=round(finished - watcher.back_at, 1),
        flow_s=round(finished - began, 1),
        versions=len(versions),
    )


# --- 2. The MLflow server down during register ---------------------------------------------------


class MlflowServer:
    """`mlflow server` as a process group of its own (it starts uvicorn as a child), killed with
    SIGKILL like a crashed host and started again on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 600) -> float:
        began = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db", "--workers", "1"]
            + ["--artifacts-destination", str(self.folder / "artifacts")],
            stdout=open(self.folder / "server.log", "a"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            start_new_session=True,
        )

        def healthy():
            try:
                return urllib.request.urlopen(f"{self.url}/health", timeout=2).status == 200
            except OSError:
                assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
                return False

        wait_until(healthy, timeout, "mlflow server healthy", poll=0.5)
        return time.time() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


def task_run_counts(flow_run_id: str) -> dict[str, int]:
    """{task name: run count} of a flow run, from the Prefect API."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return {r.name.rsplit("-", 1)[0]: r.run_count for r in runs}


@pytest.mark.slow
def test_mlflow_down_during_register(tmp_path, prefect_harness, monkeypatch):
    from flows.train_concept import train_concept

    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    # The client's own HTTP retries would ride out the outage inside one attempt; without them each
    # outage fails an attempt, and the task's retries (what this drill is about) take over.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    repo = with_local_remote(make_project_repo(tmp_path / "repo", FLOW_PARAMS), tmp_path / "dvc-remote")
    dvc_repo.repro(repo, CONCEPT)
    adapter_sha = sha256_file(repo / "work" / CONCEPT / "adapter" / ADAPTER_FILE)

    outage: dict[str, float] = {}

    def kill_when_the_run_appears():
        # Register's first call that writes is the run (then params, metrics, artifacts, the model
        # and its version): the server dies with the run half-written.
        client = MlflowClient(tracking_uri=server.url)

        def run_exists():
            experiment = client.get_experiment_by_name("conceptlab")
            return experiment is not None and client.search_runs([experiment.experiment_id])

        wait_until(run_exists, 1200, "register's run", poll=0.1)
        server.kill()
        outage["killed"] = time.time()
        outage["restart_s"] = server.start()
        outage["back"] = time.time()

    killer = threading.Thread(target=kill_when_the_run_appears, daemon=True)
    killer.start()
    try:
        result = train_concept(CONCEPT, repo=str(repo))
        finished = time.time()
        killer.join(timeout=60)
        assert "back" in outage, "the server was killed during register and came back"
        client = MlflowClient(tracking_uri=server.url)
        versions = client.search_model_versions(f"name = '{CONCEPT}'")
        assert [str(v.version) for v in versions] == ["1"], "one adapter, one version"
        version = client.get_model_version(CONCEPT, "1")
        assert version.tags["conceptlab.adapter_sha256"] == adapter_sha
        assert version.tags["conceptlab.eval_run_id"] == version.run_id
        assert str(client.get_model_version_by_alias(CONCEPT, "challenger").version) == "1"
        assert result["registration"]["version"] == "1" and result["registration"]["created"]
        flow_run_id = client.get_run(version.run_id).data.tags["conceptlab.prefect_flow_run_id"]
        counts = task_run_counts(flow_run_id)
        assert counts["register"] >= 2, counts
        runs = client.search_runs([client.get_experiment_by_name("conceptlab").experiment_id])
    finally:
        server.kill()
    drill(
        "mlflow down during register",
        register_attempts=counts["register"],
        server_restart_s=round(outage["restart_s"], 1),
        recovered_after_back_s=round(finished - outage["back"], 1),
        versions=len(versions),
        runs_left=len(runs),
        half_written_runs=[r.info.status for r in runs if r.info.run_id != version.run_id],
    )


# --- 3. Two runs of one concept at once ----------------------------------------------------------


def test_a_concepts_lock_makes_a_second_run_wait_and_goes_with_its_process(tmp_path):
    """flows.dvc_repo.concept_lock across processes: a second holder waits (and is told), gives up
    with a clear message after its timeout, another concept is not blocked, and a holder killed
    with SIGKILL leaves no lock behind."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from flows.dvc_repo import concept_lock\n"
            f"with concept_lock(Path({str(repo)!r}), {CONCEPT!r}):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        waited = []
        busy = pytest.raises(dvc_repo.ConceptBusy, match=f"another flow run of {CONCEPT} in .* has held .*lock")
        with busy, dvc_repo.concept_lock(repo, CONCEPT, timeout=1, on_wait=waited.append):
            pass
        assert [p.name for p in waited] == [f"conceptlab-concept-{CONCEPT}.lock"]
        with dvc_repo.concept_lock(repo, "toy-dog", timeout=1):
            pass  # another concept runs meanwhile
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with dvc_repo.concept_lock(repo, CONCEPT, timeout=5, on_wait=waited.append):
            pass
        assert len(waited) == 1, "free at once: the kernel released the dead holder's lock"
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def evaluated(cfg, layout):
    from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_train

    for stage in (run_curate, run_caption, run_prior, run_train, run_evaluate):
        stage(cfg, layout)
    return cfg, layout


@pytest.fixture
def postgres_tracking_uri():
    """A PostgreSQL database of this test's own (the team's registry backend), dropped afterwards."""
    import uuid

    import psycopg2

    name = f"drills_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


REGISTER_AT_ONCE = """
import json, sys, time
from pathlib import Path
from components.config import load_config
from components.layout import ConceptLayout
from components.register import register

concept_file, params_file, work, uri, commit, go = sys.argv[1:]
cfg = load_config(Path(concept_file), Path(params_file))
layout = ConceptLayout(Path(work), cfg.concept.name)
registry = cfg.params.registry.model_copy(update={"tracking_uri": uri})
while not Path(go).exists():
    time.sleep(0.01)
result = register(cfg.concept, layout.adapter, layout.evaluation, registry, {"git_commit": commit})
print("RESULT " + result.model_dump_json())
"""


@pytest.mark.slow
def test_two_machines_register_one_adapter_at_once(
    evaluated, concept_dir, params_file, postgres_tracking_uri, tmp_path
):
    """Two workers ("machines": each its own copy of the outputs, no shared file lock) register the
    same adapter into one PostgreSQL-backed registry at the same instant: one version, and the run
    that lost the race is withdrawn."""
    cfg, layout = evaluated
    client = MlflowClient(tracking_uri=postgres_tracking_uri)
    client.search_experiments()  # the registry's schema, created once before the workers start
    works = []
    for machine in ("a", "b"):
        work = tmp_path / f"machine-{machine}" / "work"
        shutil.copytree(layout.root, work / layout.concept)
        works.append(work)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_AT_ONCE, str(concept_dir / "concept.yaml"), str(params_file), str(work)]
            + [postgres_tracking_uri, f"commit-{i}", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for i, work in enumerate(works)
    ]
    time.sleep(15)  # both have imported MLflow and wait at the start line
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1]))
    versions = client.search_model_versions(f"name = '{CONCEPT}'")
    experiment = client.get_experiment_by_name("conceptlab").experiment_id
    deleted = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert [str(v.version) for v in versions] == ["1"], "one adapter, one version"
    assert {r["version"] for r in results} == {"1"}
    assert sorted(r["created"] for r in results) == [False, True]
    assert len(client.search_runs([experiment])) == 1
    assert str(client.get_model_version_by_alias(CONCEPT, "challenger").version) == "1"
    drill(
        "two machines register one adapter at once",
        versions=len(versions),
        created=[r["created"] for r in results],
        withdrawn_runs=len(deleted),
    )

    # A registration cut short after its version was made (the server went away before the tags):
    # the retry completes that version instead of making another.
    for key in ("eval_run_id", "eval_metrics_sha256", "eval_settings_sha256", "git_commit"):
        client.delete_model_version_tag(CONCEPT, "1", f"conceptlab.{key}")
    from components.register import register

    registry = cfg.params.registry.model_copy(update={"tracking_uri": postgres_tracking_uri})
    again = register(cfg.concept, layout.adapter, layout.evaluation, registry, {"git_commit": "retry"})
    assert (again.version, again.created, again.eval_recorded) == ("1", False, False)
    assert len(client.search_model_versions(f"name = '{CONCEPT}'")) == 1
    assert len(client.search_runs([experiment])) == 1, "no evaluation run for an evaluation already logged"
    tags = client.get_model_version(CONCEPT, "1").tags
    assert (tags["conceptlab.eval_run_id"], tags["conceptlab.git_commit"]) == (again.run_id, "retry")


@pytest.mark.slow
def test_two_demos_of_one_concept_started_3_s_apart(tmp_path):
    """As a new user would: `conceptlab demo` twice, the second 3 s after the first, in one checkout
    (embedded defaults: each its own Prefect ephemeral server on one PREFECT_HOME, MLflow on SQLite).
    One trains and registers; the other waits for the concept's lock, finds every stage done and the
    version registered: one version, a dvc.lock that describes the workspace."""
    repo = with_local_remote(make_project_repo(tmp_path / "repo", FLOW_PARAMS), tmp_path / "dvc-remote")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    # The ephemeral server's start waits 120 s by default (components.environment); on 2 cores shared
    # with other test processes two starting at once have taken longer.
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        OMP_NUM_THREADS="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="900",
    )
    demo = [str(Path(sys.executable).parent / "conceptlab"), "demo", "--concept", CONCEPT, "--repo", str(repo)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    began = time.time()
    procs = []
    for log in logs:
        procs.append(subprocess.Popen(demo, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=repo))
        time.sleep(3)
    for proc in procs:
        proc.wait(timeout=2400)
    took = time.time() - began
    outputs = [log.read_text() for log in logs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
    waited = [f"another run of {CONCEPT} is in progress" in out for out in outputs]
    assert sorted(waited) == [False, True], "one of the two waited for the other"
    second = outputs[waited.index(True)]
    assert "DVC ran: nothing" in second, "the one that waited found every stage done"
    for out in outputs:
        assert f"registry: {CONCEPT} v1 @challenger" in out
    versions = registered_versions(f"sqlite:///{repo}/mlflow.db")
    assert [str(v.version) for v in versions] == ["1"], "one adapter, one version"
    adapter_sha = sha256_file(repo / "work" / CONCEPT / "adapter" / ADAPTER_FILE)
    assert versions[0].tags["conceptlab.adapter_sha256"] == adapter_sha
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert {f"{s}@{CONCEPT}" for s in dvc_repo.STAGES} <= set(lock["stages"])
    assert dvc_repo.changed_stages(repo, CONCEPT) == [], "dvc.lock describes the workspace"
    drill("two demos 3 s apart", versions=len(versions), waited=waited, seconds=round(took, 1))


# --- 4. A worker killed mid-training --------------------------------------------------------------

WORKER = """
import sys
from components.environment import apply_embedded_defaults
apply_embedded_defaults()
from flows.train_concept import train_concept
train_concept(sys.argv[1], repo=sys.argv[2])
"""


def checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("step-")) for p in folder.glob("step-*") if (p / "state.json").exists())


@pytest.mark.slow
def test_a_worker_killed_mid_training_resumes_from_its_checkpoint(tmp_path, prefect_harness, monkeypatch):
    from prefect.settings import get_current_settings

    from components.pipeline import run_train
    from flows.common import concept_context
    from flows.train_concept import train_concept

    params = deep_merge(FLOW_PARAMS, {"train": {"max_steps": 120, "checkpoint_every": 10}})
    repo = with_local_remote(make_project_repo(tmp_path / "repo", params), tmp_path / "dvc-remote")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    checkpoints = repo / "work" / CONCEPT / "checkpoints"

    # The worker: a process running the flow against this Prefect API, killed (with everything it
    # started: dvc repro, the train stage) once the train stage has written its first checkpoint.
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, CONCEPT, str(repo)],
        stdout=open(tmp_path / "worker.log", "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)},
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        wait_until(lambda: checkpoint_steps(checkpoints) or worker.poll() is not None, 1800, "a first checkpoint")
        started = psutil.Process(worker.pid).children(recursive=True)
        worker.kill()
        for proc in started:
            proc.kill()
        worker.wait(timeout=30)
        psutil.wait_procs(started, timeout=30)
    finally:
        worker.kill()
        worker.wait()
    assert worker.returncode == -signal.SIGKILL, (tmp_path / "worker.log").read_text()[-3000:]
    left = checkpoint_steps(checkpoints)
    assert left and max(left) < 120 and not (repo / "work" / CONCEPT / "adapter" / ADAPTER_FILE).exists()

    # The next run: DVC runs the train stage again (--auto-resume) and it continues from the newest
    # checkpoint; the run completes and registers.
    began = time.time()
    result = train_concept(CONCEPT, repo=str(repo))
    took = time.time() - began
    assert f"train@{CONCEPT}" in result["ran"] and result["registration"]["version"] == "1"
    trained = json.loads((repo / "work" / CONCEPT / "adapter" / "train.json").read_text())
    assert trained["resumed_from_step"] == max(left)
    assert trained["steps"] == 120

    # An uninterrupted run on the same inputs gives the same adapter, byte for byte.
    ctx = concept_context(repo, CONCEPT)
    from components.layout import ConceptLayout

    reference = ConceptLayout(tmp_path / "reference", CONCEPT)
    for name in ("curated", "captions", "prior"):
        shutil.copytree(repo / "work" / CONCEPT / name, reference.root / name)
    uninterrupted = run_train(ctx.cfg, reference, resume="no")
    assert uninterrupted.resumed_from_step is None
    assert uninterrupted.adapter_sha256 == trained["adapter_sha256"]
    drill(
        "worker killed mid-training",
        killed_with_checkpoints=left,
        resumed_from_step=trained["resumed_from_step"],
        max_steps=120,
        next_run_s=round(took, 1),
        adapter_equals_uninterrupted=True,
    )
