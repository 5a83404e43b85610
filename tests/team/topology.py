"""The team topology as processes on loopback: PostgreSQL databases, a Prefect server, an MLflow server
(PostgreSQL backend, S3 artifacts), Prefect workers, a bare git repository as the team's remote.

Each start_* function returns a handle whose stop() ends what it started (the process group it leads)
and whose log() shows the process's output; handles are context managers too. The services are
started through infra/team.sh, the commands infra/README.md shows (TEAM_COMMANDS lists them, and
tests/code/test_team_commands.py checks that the README shows exactly those).

Usage (tests/team/test_team.py does this, with try/finally):

    prefect_db, mlflow_db = create_database("x_prefect"), create_database("x_mlflow")
    prefect = start_prefect_server(prefect_db, tmp / "prefect", wait=False)   # both start in parallel
    mlflow = start_mlflow_server(mlflow_db, s3_endpoint, "s3://mlflow-artifacts/x", tmp / "mlflow", wait=False)
    remote = make_bare_remote(tmp / "git", params_overrides, "s3://dvc-store/x", s3_endpoint)
    venv, seconds = make_worker_env(tmp / "worker-venv")                     # once; workers can share it
    prefect.wait_ready(); mlflow.wait_ready()
    env = team_env(prefect, mlflow, s3_endpoint, remote.url)
    deploy(env)                                                              # pools, limits, prefect deploy
    worker = start_worker("conceptlab-gpu", env, venv, tmp / "w1", limit=1, name="worker-1")
    run_id = run_deployment("train-concept/train-concept", env, "concept=toy-purple-triangle")
    ... worker.stop(); mlflow.stop(); prefect.stop(); prefect_db.drop(); mlflow_db.drop()
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEAM_SH = "infra/team.sh"
PG = "postgres@127.0.0.1:5432"


def service_command(*args: str) -> list[str]:
    """`infra/team.sh <subcommand> ...`, run from the repository root."""
    return [TEAM_SH, *args]


def deployment_run_command(name: str, *params: str) -> list[str]:
    """`uv run prefect deployment run <flow>/<deployment> -p k=v ... --watch` (waits; fails if the run fails)."""
    return ["uv", "run", "prefect", "deployment", "run", name, *(a for p in params for a in ("-p", p)), "--watch"]


TRAIN_RUN = ("train-concept/train-concept", "concept=toy-purple-triangle")
RETRAIN_RUN = ("retrain/retrain-nightly",)
# The commands infra/README.md and README.md show, in order ("&": a service, left running); the team
# test runs each of them (tests/code/test_team_commands.py checks both READMEs against this list).
TEAM_COMMANDS = [
    shlex.join(service_command("prefect-server")) + " &",
    shlex.join(service_command("mlflow-server")) + " &",
    shlex.join(service_command("mlflow-users")),
    shlex.join(service_command("deploy")),
    shlex.join(service_command("worker", "conceptlab-gpu")) + " &",
    shlex.join(service_command("worker", "conceptlab-cpu"))
    + " &",  # retrain-nightly dispatches a train-concept run per concept
    shlex.join(deployment_run_command(*TRAIN_RUN)),
    shlex.join(deployment_run_command(*RETRAIN_RUN)),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise RuntimeError("`uv` is not on PATH: the team commands and prefect.yaml's pull steps call it")
    return found


def base_env(**extra: str) -> dict[str, str]:
    """The test's environment for a service: offline, no telemetry, `uv` on PATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PATH=str(Path(uv()).parent) + os.pathsep + env.get("PATH", ""),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
        TQDM_DISABLE="1",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    env.update(extra)
    return env


@dataclass
class Process:
    """A started process (leader of its own process group); stop() ends the group."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    url: str | None = None
    health_url: str | None = None
    extra: dict = field(default_factory=dict)

    def wait_ready(self, timeout: float = 300) -> Process:
        """Returns once ``health_url`` answers; raises with the log if the process exits or times out."""
        if self.health_url:
            wait_http(self, self.health_url, timeout)
        return self

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.popen.pid, sig)  # the group this process leads: uv run's child, its workers
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    popen = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so stop() reaches every child
    )
    return Process(name=name, popen=popen, log_path=log_path)


def wait_http(proc: Process, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=3)
            return
        except OSError:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode}):\n{proc.log()}") from None
            time.sleep(1)
    proc.stop()
    raise RuntimeError(f"{proc.name} did not answer {url} in {timeout:.0f} s:\n{proc.log()}")


# --- PostgreSQL -------------------------------------------------------------------------------------


@dataclass
class Database:
    """A uniquely named PostgreSQL database on 127.0.0.1:5432; drop() removes it."""

    name: str

    @property
    def asyncpg_url(self) -> str:  # Prefect
        return f"postgresql+asyncpg://{PG}/{self.name}"

    @property
    def psycopg2_url(self) -> str:  # MLflow; for plain postgresql:// SQLAlchemy 2.1 picks psycopg 3 (not locked)
        return f"postgresql+psycopg2://{PG}/{self.name}"

    def drop(self) -> None:
        _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.drop()


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(prefix: str) -> Database:
    db = Database(f"{prefix}_{uuid.uuid4().hex[:10]}")
    _admin(f'CREATE DATABASE "{db.name}"')
    return db


# --- services -----------------------------------------------------------------------------------------


def start_prefect_server(
    db: Database, home: Path, timeout: float = 300, wait: bool = True, auth_string: str | None = None
) -> Process:
    """`infra/team.sh prefect-server` on a free port, its database ``db``. ``.url`` is the API URL.
    wait=False returns at once (start both servers, then wait_ready() each: they start in parallel).
    ``auth_string`` (user:password) turns the API's authentication on; without it, CONCEPTLAB_AUTH=off."""
    port = free_port()
    env = base_env(
        **auth_env(PREFECT_SERVER_API_AUTH_STRING=auth_string),
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=db.asyncpg_url,
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_ENABLED="false",  # the UI's static build costs seconds and nothing here reads it
    )
    proc = start("prefect-server", service_command("prefect-server"), env, home)
    proc.url = f"http://127.0.0.1:{port}/api"
    proc.health_url = f"{proc.url}/health"
    return proc.wait_ready(timeout) if wait else proc


def start_mlflow_server(
    db: Database,
    s3_endpoint: str,
    artifacts: str,
    log_dir: Path,
    timeout: float = 300,
    wait: bool = True,
    admin_password: str | None = None,
    champion_setters: str = "gate",
) -> Process:
    """`infra/team.sh mlflow-server`: backend ``db``, artifacts proxied to ``artifacts`` (s3://bucket/prefix)
    on the S3 endpoint ``s3_endpoint``. ``.url`` is the tracking URI. ``admin_password`` turns MLflow's
    basic-auth app on (admin user `admin`; ``champion_setters``: the users that may move `champion`);
    without it, CONCEPTLAB_AUTH=off."""
    port = free_port()
    env = base_env(
        **auth_env(
            MLFLOW_AUTH_ADMIN_USERNAME="admin" if admin_password else None,
            MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=uuid.uuid4().hex if admin_password else None,
            MLFLOW_CHAMPION_SETTERS=champion_setters if admin_password else None,
            TMPDIR=str(log_dir) if admin_password else None,  # team.sh writes the auth config there
        ),
        MLFLOW_PORT=str(port),
        MLFLOW_BACKEND_STORE_URI=db.psycopg2_url,
        MLFLOW_ARTIFACTS_DESTINATION=artifacts,
        **s3_env(s3_endpoint),
    )
    proc = start("mlflow-server", service_command("mlflow-server"), env, log_dir)
    proc.url = f"http://127.0.0.1:{port}"
    proc.health_url = f"{proc.url}/health"
    return proc.wait_ready(timeout) if wait else proc


def start_s3_server():
    """moto's S3 server mode on a free loopback port, in a thread of this process (as tests/conftest.py's
    s3_server fixture, for scripts outside pytest). Returns (endpoint URL, the server: .stop() ends it)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return f"http://127.0.0.1:{port}", server


def auth_env(**settings: str | None) -> dict[str, str]:
    """The given credentials, or CONCEPTLAB_AUTH=off when none is given (infra/team.sh then starts the
    server without authentication: loopback only)."""
    given = {k: v for k, v in settings.items() if v}
    return given or {"CONCEPTLAB_AUTH": "off"}


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def make_worker_env(path: Path) -> tuple[Path, float]:
    """A virtual environment of its own for workers (the locked dependencies, no dev group), built
    from the uv cache; the pull steps' `uv sync` installs each cloned revision into it, so it must not
    be the test's own .venv. Returns the path and the seconds it took."""
    start_time = time.monotonic()
    env = base_env(UV_PROJECT_ENVIRONMENT=str(path))
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [uv(), "sync", "--frozen", "--no-dev", "--quiet"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    return path, time.monotonic() - start_time


def team_env(prefect: Process, mlflow: Process, s3_endpoint: str, git_url: str, **extra: str) -> dict[str, str]:
    """What a team member's shell (or a worker's machine) exports: the two servers, S3, the git remote."""
    return base_env(
        PREFECT_API_URL=prefect.url,
        MLFLOW_TRACKING_URI=mlflow.url,
        CONCEPTLAB_GIT_URL=git_url,
        **s3_env(s3_endpoint),
        **extra,
    )


def start_worker(
    pool: str, env: dict[str, str], worker_venv: Path, log_dir: Path, limit: int | None = None, name: str = "worker"
) -> Process:
    """`infra/team.sh worker <pool>` with its own environment (UV_PROJECT_ENVIRONMENT=worker_venv) and a
    working folder of its own for the clones of its flow runs. Returns once the worker polls."""
    env = {**env, "UV_PROJECT_ENVIRONMENT": str(worker_venv), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    env.pop("VIRTUAL_ENV", None)
    cmd = service_command("worker", pool, *(["--limit", str(limit)] if limit is not None else []))
    proc = start(name, cmd, env, log_dir)
    deadline = time.monotonic() + 180
    while "started!" not in proc.log() and "polling" not in proc.log().lower():
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.log()}")
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not start in 180 s:\n{proc.log()}")
        time.sleep(1)
    return proc


def team_command(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    """Runs one of the team's commands (from the checkout, as a person would) and returns its output;
    raises with the output if it fails."""
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{out[-6000:]}")
    return out


def deploy(env: dict[str, str], gpu_pool_type: str = "process") -> str:
    """`infra/team.sh deploy`: work pools, concurrency limits, `prefect deploy --all` from prefect.yaml."""
    return team_command(service_command("deploy"), {**env, "CONCEPTLAB_GPU_POOL_TYPE": gpu_pool_type})


def run_deployment(name: str, env: dict[str, str], *params: str, timeout: float = 900) -> str:
    """`uv run prefect deployment run <name> -p k=v ... --watch`; returns the flow run's id once it
    Completed (raises with the output if it did not)."""
    out = team_command(deployment_run_command(name, *params), env, timeout=timeout)
    return out.split("UUID:", 1)[1].split()[0]


# --- the team's git remote ------------------------------------------------------------------------------


@dataclass
class BareRemote:
    """A bare git repository holding the project (the team's remote) and the checkout it came from."""

    path: Path
    source: Path

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def clone(self, dest: Path, rev: str | None = None) -> Path:
        _git(["clone", "-q", self.url, str(dest)], dest.parent)
        if rev:
            _git(["checkout", "-q", rev], dest)
        return dest

    def head(self, branch: str = "main") -> str:
        return _git(["rev-parse", f"refs/heads/{branch}"], self.path).strip()


def _git(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return proc.stdout


def project_files() -> list[str]:
    """The project as a clone of it holds it: tracked files plus new ones not ignored (this checkout's)."""
    out = _git(["ls-files", "--cached", "--others", "--exclude-standard", "-z"], ROOT)
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


def make_bare_remote(
    dest: Path, params_overrides: dict, dvc_remote_url: str, dvc_endpoint: str | None = None
) -> BareRemote:
    """The team's remote: a commit of this checkout's files (params.yaml with ``params_overrides``) and a
    default DVC remote ``dvc_remote_url`` (with ``dvc_endpoint`` for an S3-compatible store), pushed to
    a bare repository at ``dest``/conceptlab.git (branch main)."""
    import yaml

    from components.config import deep_merge

    source = dest / "source"
    for name in project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), params_overrides)
    (source / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _git(["init", "-q", "-b", "main"], source)
    _git(["config", "user.email", "lead@conceptlab.test"], source)
    _git(["config", "user.name", "team lead"], source)
    dvc = [sys.executable, "-m", "dvc"]
    for args in (
        ["remote", "add", "-d", "team", dvc_remote_url],
        *([["remote", "modify", "team", "endpointurl", dvc_endpoint]] if dvc_endpoint else []),
    ):
        subprocess.run([*dvc, *args], cwd=source, check=True, capture_output=True)
    _git(["add", "-A"], source)
    _git(["commit", "-q", "-m", "conceptlab for the team"], source)
    bare = dest / "conceptlab.git"
    _git(["clone", "-q", "--bare", str(source), str(bare)], dest)
    _git(["remote", "add", "origin", bare.as_uri()], source)
    _git(["fetch", "-q", "origin"], source)
    _git(["branch", "-q", "--set-upstream-to=origin/main", "main"], source)
    return BareRemote(path=bare, source=source)
