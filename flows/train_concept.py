"""train_concept: DVC runs the concept's stages (and skips what is unchanged), the outputs are pushed
to the DVC remote, dvc.lock is committed (only once its data is on the remote, so no commit names
data the remote lacks), the adapter is registered in MLflow with that commit as lineage, and Prefect
artifacts report the metrics. A failed stage, push or commit raises before anything is registered."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from components.pipeline import lineage
from flows import dvc_repo
from flows.common import ConceptContext, concept_context
from flows.report import metrics_rows, report_markdown
from flows.timing import span

NETWORK_RETRIES = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.2)
# An MLflow server that restarts (a deploy, a rescheduled pod) is away for about a minute (51-65 s
# measured here on 2 busy cores); the retries span 8+16+32+64 s beyond the client's own. A retry
# after a partial attempt is safe: components.register never makes a second version of one adapter.
REGISTRY_RETRIES = dict(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=8), retry_jitter_factor=0.2)


@task(cache_policy=NO_CACHE, tags=["dvc-repo", "gpu"], timeout_seconds=6 * 3600)
def reproduce(ctx: ConceptContext) -> dvc_repo.ReproReport:
    with span("dvc.repro"):
        report = dvc_repo.repro(ctx.repo, ctx.cfg.concept.name)
    logger = get_run_logger()
    logger.info("ran: %s; skipped: %s", report.ran or "nothing", report.skipped or "nothing")
    return report


@task(cache_policy=NO_CACHE, tags=["dvc-repo"])
def commit(ctx: ConceptContext) -> str:
    with span("git.commit"):
        return dvc_repo.commit_lock(ctx.repo, ctx.cfg.concept.name)


@task(cache_policy=NO_CACHE, tags=["dvc-repo"], **NETWORK_RETRIES)
def push(ctx: ConceptContext, remote: str | None) -> None:
    with span("dvc.push"):
        if dvc_repo.push(ctx.repo, remote, ctx.cfg.concept.name) == "already pushed":
            get_run_logger().info("the outputs in dvc.lock are on the remote already (pushed by the last run)")


def _retry_unless_conflict(task, task_run, state) -> bool:
    """A rejected or failed push is retried; a real conflict (LineageConflict) is not: it fails the run."""
    try:
        state.result()
    except dvc_repo.LineageConflict:
        return False
    except Exception:
        return True
    return True


@task(cache_policy=NO_CACHE, tags=["dvc-repo"], retry_condition_fn=_retry_unless_conflict, **NETWORK_RETRIES)
def push_commit(ctx: ConceptContext, revision: str) -> str:
    """Pushes the lineage commit, rebased over what others pushed meanwhile; returns the commit the
    remote holds, which is what the model version names."""
    pushed = dvc_repo.push_commit(ctx.repo, revision, ctx.cfg.concept.name)
    if pushed is None:
        get_run_logger().warning("%s has no git remote `origin`: commit %s stays local", ctx.repo, revision)
        return revision
    if pushed != revision:
        get_run_logger().info("rebased %s over commits pushed meanwhile: %s", revision[:12], pushed[:12])
    return pushed


@task(cache_policy=NO_CACHE, **REGISTRY_RETRIES)
def register(ctx: ConceptContext, git_commit: str):
    with span("mlflow.register"):  # MLflow's import included
        return _register(ctx, git_commit)


def _register(ctx: ConceptContext, git_commit: str):
    # git_commit: the commit made after the push (its dvc.lock holds this adapter's md5), not HEAD.
    extra = {**lineage(ctx.layout, ctx.repo), **dvc_repo.lock_hashes(ctx.repo, ctx.cfg.concept.name)}
    extra["git_commit"] = git_commit
    extra["prefect_flow_run_id"] = str(flow_run.get_id() or "")
    from components.register import register as register_stage

    result = register_stage(ctx.cfg.concept, ctx.layout.adapter, ctx.layout.evaluation, ctx.cfg.params.registry, extra)
    result.write(ctx.layout.registration)
    return result


@task(cache_policy=NO_CACHE)
def publish(ctx: ConceptContext, registration, report: dvc_repo.ReproReport) -> None:
    from components.evaluate import EvalResult

    with span("prefect.artifacts"):
        _publish(ctx, registration, report, EvalResult.read(ctx.layout.evaluation / "metrics.json"))


def _publish(ctx: ConceptContext, registration, report: dvc_repo.ReproReport, evaluation) -> None:
    key = ctx.cfg.concept.name.lower()
    create_markdown_artifact(
        key=f"{key}-report",
        markdown=report_markdown(ctx, evaluation, registration, report),
        description=f"conceptlab run of {ctx.cfg.concept.name}",
    )
    create_table_artifact(
        key=f"{key}-metrics",
        table=metrics_rows(ctx, evaluation),
        description="challenger vs base model vs current champion",
    )


@flow(name="train-concept", log_prints=True)
def train_concept(
    concept: str,
    repo: str = ".",
    remote: str | None = None,
    push_outputs: bool = True,
    commit_lock: bool = True,
    git_push: bool = False,
    gate: bool = False,
    gate_deployment: str | None = None,
):
    """Reproduce, push to the DVC remote, commit dvc.lock (and push the commit to git `origin` with
    ``git_push``, as deployments do), register (alias challenger), report; with ``gate``, run the
    promotion gate on it too (retrain's fanned-out runs do). With ``gate_deployment`` (e.g.
    `promote/promote`) the gate is a run of that deployment instead: on a team deployment with
    authentication only the gate's identity may move `champion`, and it is the CPU pool's worker's,
    not this GPU job's (infra/README.md, "Identities").

    The final state's message is the outcome in words ("trained+promoted v3", ...): a parent that
    started this run through a deployment reads it from the Prefect API, with no shared result storage."""
    ctx = concept_context(repo, concept)

    def waiting(lock_file):
        get_run_logger().warning(
            "another run of %s is in progress in %s; waiting for it (%s)", concept, repo, lock_file
        )

    # One run of a concept at a time per repository: a second one waits, then finds the work done.
    with dvc_repo.concept_lock(ctx.repo, concept, on_wait=waiting):
        report = reproduce(ctx)
        if push_outputs:
            push(ctx, remote)
        revision = commit(ctx) if commit_lock else "uncommitted"
        if commit_lock and git_push:
            revision = push_commit(ctx, revision)  # a conflict fails the run here, before register
        registration = register(ctx, revision)
    publish(ctx, registration, report)
    result = {"ran": report.ran, "skipped": report.skipped, "registration": registration.model_dump()}
    if not gate:
        return Completed(message=f"trained v{registration.version}", data=result)
    if gate_deployment:
        from prefect.deployments import run_deployment

        run = run_deployment(gate_deployment, parameters={"concept": concept}, flow_run_name=f"{concept}-gate")
        state = run.state  # run_deployment waits for the run to end and returns it
        if not state.is_completed():
            raise RuntimeError(f"the gate's run ({gate_deployment}) ended {state.name}: {state.message}")
        return Completed(message=f"trained+{state.message}", data=result)
    from flows.promote import gate_outcome, promote  # here: flows.promote imports this module

    result["verdict"] = promote(concept, repo=repo)
    return Completed(message=f"trained+{gate_outcome(result['verdict'])}", data=result)
