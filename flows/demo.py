"""The demo: the sample concept through train_concept and promote on the embedded defaults
(Prefect's ephemeral server, MLflow on SQLite, a local DVC remote)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flows import dvc_repo
from flows.common import list_concept
from flows.timing import span

DEFAULT_REMOTE_DIR = Path.home() / ".cache" / "conceptlab" / "dvc-remote"


def ensure_dvc_remote(repo: Path) -> str:
    """Uses the repository's default DVC remote; without one, adds a local one (in .dvc/config.local)."""
    try:
        return dvc_repo.dvc(repo, "remote", "default").strip().splitlines()[-1].strip()
    except dvc_repo.DvcError as exc:
        if "No default remote" not in str(exc):
            raise
    DEFAULT_REMOTE_DIR.mkdir(parents=True, exist_ok=True)
    dvc_repo.dvc(repo, "remote", "add", "--local", "--default", "--force", "local", str(DEFAULT_REMOTE_DIR))
    return "local"


def start_prefect_api() -> None:
    """Starts Prefect's temporary server now (what the first flow call would do) when no API is
    configured, so that its start-up is measured on its own; a no-op with PREFECT_API_URL set."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().start()  # the instance get_client() uses (one per port; None: any free port)


def run_demo(repo: Path, concept: str, log: Callable[[str], object] = print) -> dict:
    with span("import.flows"):  # Prefect, MLflow's client side and the flows' modules
        from flows.promote import promote
        from flows.train_concept import train_concept

    # Any concept folder runs: one not yet in params.yaml `concepts` (what dvc.yaml loops over) is added.
    if list_concept(repo, concept):
        log(
            f"note: added {concept} to params.yaml `concepts` (dvc.yaml runs each stage for the listed "
            "concepts); commit params.yaml to keep it"
        )
    with span("dvc.remote"):
        remote = ensure_dvc_remote(repo)
    started = time.time()  # "flows took": from here (the README's and the figures)
    with span("prefect.server_start"):
        start_prefect_api()
    # The demo leaves the person's git history alone; scheduled runs commit dvc.lock (commit_lock=True).
    with span("flow.train_concept"):
        trained = train_concept(concept, repo=str(repo), commit_lock=False)
    with span("flow.promote"):
        verdict = promote(concept, repo=str(repo))
    return {"remote": remote, "trained": trained, "verdict": verdict, "seconds": time.time() - started}
