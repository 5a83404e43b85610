"""retrain: the scheduled flow. Retrains and gates the concepts whose tracked data or params changed
(DVC's status against dvc.lock) or that have no champion yet, and reports each concept's outcome.

How concepts run in parallel: with ``fan_out`` naming a deployment (prefect.yaml's nightly retrain
names `train-concept/train-concept`), each due concept becomes a flow run of its own of that
deployment (``run_deployment``, with ``gate=True`` so the gate runs in the same run, on the
workspace that trained it). A worker picks each run up and clones the repository fresh, so two
concepts never share a DVC workspace, a dvc.lock or DVC's repository lock; each pushes its own
lineage commit (a rebase over the others' pushes, dvc.lock merged stage by stage by
flows/dvc_lock_merge.py). How many train at once is the GPU work pool's business: one worker slot per
device (`prefect worker start --limit 1` per GPU, or the pool's concurrency limit), and the `gpu`
tag's global concurrency limit on the training task bounds it across pools.

Why not mapped tasks on a distributed task runner (prefect-dask, prefect-ray): tasks of one flow
run share its process and its one checkout, so `dvc repro` of two concepts would still queue on one
workspace's lock and one dvc.lock; the cluster would be a second scheduler beside the work pool that
already knows the GPUs; and a concept's failure or retry would be a task inside a run instead of a
run of its own that a person can inspect, retry or cancel alone. Deployments also let one concept
be trained on demand with exactly the code the nightly run uses.

Without ``fan_out`` (`conceptlab flow retrain`, the embedded server) the due concepts run one after
another as subflows in this checkout, as before. Either way, a concept that fails is reported and
the others go on: the return value, the log and the `retrain-summary` table artifact name every
concept with its outcome: trained+promoted, trained+refused, trained+kept (already champion),
unchanged, or failed: reason. The flow run itself fails if any concept failed, after all finished.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Completed, Failed, State

from flows import dvc_repo
from flows.common import concept_context, listed_concepts
from flows.report import champion_metrics
from flows.train_concept import train_concept


@task(cache_policy=NO_CACHE, tags=["dvc-repo"])
def needs_training(repo: str, concept: str) -> tuple[bool, str]:
    ctx = concept_context(repo, concept)
    changed = dvc_repo.changed_stages(ctx.repo, concept)
    if changed:
        return True, "changed: " + ", ".join(changed)
    version, _ = champion_metrics(ctx.tracking_uri, ctx.cfg.concept.name)
    if version is None:
        return True, "no champion yet"
    return False, f"unchanged since champion v{version}"


def _failure(state: State) -> str:
    """A failed run's reason in one line: the failing stage's own `error: ...` line (how the conceptlab
    CLI reports bad input) where the message holds one, else the message's last line (for a DvcError
    that is DVC's "failed to reproduce <stage>")."""
    lines = [line.strip() for line in (state.message or "").splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    reason = errors[-1] if errors else lines[-1] if lines else state.name
    return f"failed: {reason[:400]}"


def outcome_of(state: State) -> str:
    """A finished train-concept run's outcome: its final message when it completed (train_concept
    sets it), else why it did not."""
    return (state.message or "trained") if state.is_completed() else _failure(state)


def _train_here(concepts: list[str], repo: str, remote: str | None, push_outputs: bool, git_push: bool):
    """One subflow after another in this checkout; yields (concept, outcome, flow run id)."""
    for concept in concepts:
        state = train_concept(
            concept,
            repo=repo,
            remote=remote,
            push_outputs=push_outputs,
            git_push=git_push,
            gate=True,
            return_state=True,
        )
        yield concept, outcome_of(state), str(state.state_details.flow_run_id or "")


def _fan_out(
    concepts: list[str], deployment: str, gate: str | None, remote: str | None, timeout_s: float, poll_s: float
):
    """A run of ``deployment`` per concept, all started before any is awaited; yields as they finish."""
    started = {}
    for concept in concepts:
        run = run_deployment(
            deployment,
            parameters={"concept": concept, "remote": remote, "git_push": True, "gate": True, "gate_deployment": gate},
            timeout=0,  # start it, do not wait: the next concept's run is created at once
            flow_run_name=f"{concept}-retrain",
            tags=["retrain"],
        )
        started[run.id] = concept
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while started:
            for run_id, concept in list(started.items()):
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    del started[run_id]
                    yield concept, outcome_of(state), str(run_id)
            if started and time.monotonic() > deadline:
                for run_id, concept in started.items():
                    state = client.read_flow_run(run_id).state
                    yield concept, f"failed: not finished after {timeout_s:.0f} s (state {state.name})", str(run_id)
                return
            time.sleep(poll_s)


@flow(name="retrain", log_prints=True)
def retrain(
    repo: str = ".",
    remote: str | None = None,
    push_outputs: bool = True,
    git_push: bool = False,
    fan_out: str | None = None,
    gate_deployment: str | None = None,
    fan_out_timeout_s: float = 12 * 3600,
    poll_s: float = 5.0,
):
    """Every listed concept's outcome, {concept: {"outcome", "why", "flow_run"}}. ``fan_out``: a
    deployment (`flow/deployment`) that trains one concept per run (a fanned-out run always pushes
    its lineage commit: its clone is thrown away). ``gate_deployment``: each fanned-out run gates its
    concept through a run of this deployment (the gate's identity moves `champion`), not in itself."""
    logger = get_run_logger()
    results, due = {}, []
    for concept in listed_concepts(repo):
        state = needs_training(repo, concept, return_state=True)
        if not state.is_completed():
            results[concept] = {"outcome": _failure(state), "why": "could not tell whether it is due", "flow_run": ""}
            continue
        is_due, why = state.result()
        results[concept] = {"outcome": "unchanged", "why": why, "flow_run": ""}
        if is_due:
            due.append(concept)
    finished = (
        _fan_out(due, fan_out, gate_deployment, remote, fan_out_timeout_s, poll_s)
        if fan_out
        else _train_here(due, repo, remote, push_outputs, git_push)
    )
    for concept, outcome, run_id in finished:
        results[concept].update(outcome=outcome, flow_run=run_id)
        logger.info("%s: %s", concept, outcome)
    for concept, result in results.items():
        if not result["flow_run"]:
            logger.info("%s: %s (%s)", concept, result["outcome"], result["why"])

    rows = [{"concept": c, **r} for c, r in results.items()]
    create_table_artifact(key="retrain-summary", table=rows, description="retrain: each listed concept's outcome")
    failed = sorted(c for c, r in results.items() if r["outcome"].startswith("failed"))
    if failed:
        return Failed(message=f"{len(failed)} of {len(results)} concepts failed: {', '.join(failed)}", data=results)
    return Completed(message=f"{len(due)} of {len(results)} concepts retrained", data=results)
