"""The demo: the sample concept through train_concept and promote on the embedded defaults
(Prefect's ephemeral server, MLflow on SQLite, a local DVC remote)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flows import dvc_repo
from flows.common import list_concept
from flows.timing import span

DEFAULT_REMOTE_DIR = Path.home() / ".cache" / "conceptlab" / "dvc-remote"


def ensure_dvc_remote(repo: Path) -> str:
    """Uses the repository's default DVC remote; without one, adds a local one (in .dvc/config.local)."""
    try:  # a read of DVC's configuration: it may run beside another DVC command
        return dvc_repo.dvc(repo, "remote", "default", lock=False).strip().splitlines()[-1].strip()
    except dvc_repo.DvcError as exc:
        if "No default remote" not in str(exc):
            raise
    DEFAULT_REMOTE_DIR.mkdir(parents=True, exist_ok=True)
    dvc_repo.dvc(repo, "remote", "add", "--local", "--default", "--force", "local", str(DEFAULT_REMOTE_DIR))
    return "local"


def run_demo(repo: Path, concept: str, log: Callable[[str], object] = print) -> dict:
    from flows.nothing_changed import could_be_unchanged, record_outcome, unchanged_result
    from flows.prefect_api import start_temporary_server, startup_timeout

    # Any concept folder runs: one not yet in params.yaml `concepts` (what dvc.yaml loops over) is added.
    if list_concept(repo, concept):
        log(
            f"note: added {concept} to params.yaml `concepts` (dvc.yaml runs each stage for the listed "
            "concepts); commit params.yaml to keep it"
        )
    started = time.time()  # "flows took": from here
    with ThreadPoolExecutor(max_workers=1) as pool:
        remote_lookup = pool.submit(ensure_dvc_remote, repo)
        if could_be_unchanged(repo, concept):
            with span("dvc.status"):  # DVC status and the registry, without Prefect
                remote = remote_lookup.result()
                found = unchanged_result(repo, concept, remote)
            if found is not None:
                log(
                    "nothing changed since the last run (DVC: every stage up to date; remote: pushed; registry: "
                    "this adapter is the champion): the flows had nothing to do and were not started"
                )
                return {"remote": remote, "pushed": False, **found, "seconds": time.time() - started}
        server = start_temporary_server()  # its start-up overlaps the imports below
        if server is not None:
            log(f"Prefect: temporary API server on {server.url} (for this run; PREFECT_API_URL to use your own)")
        with span("import.flows"):  # Prefect's flow engine, the flows' modules
            from flows.promote import promote
            from flows.train_concept import train_concept
        with span("dvc.remote"):
            remote = remote_lookup.result()
        with span("prefect.server_start"):  # what is left of its start-up to wait for
            if server is not None:
                server.wait(startup_timeout())
    # The demo leaves the person's git history alone; scheduled runs commit dvc.lock (commit_lock=True).
    with span("flow.train_concept"):
        trained = train_concept(concept, repo=str(repo), remote=remote, commit_lock=False)
    with span("flow.promote"):
        verdict = promote(concept, repo=str(repo))
    record_outcome(repo, concept, trained, verdict)
    return {"remote": remote, "pushed": True, "trained": trained, "verdict": verdict, "seconds": time.time() - started}
