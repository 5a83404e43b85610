"""Whether a demo run would do nothing, found without starting Prefect: DVC has every stage of the
concept up to date, the outputs dvc.lock names were pushed to the remote by the last run, and the
registry's `challenger` holds this adapter with this evaluation and is the `champion` already. Then
train_concept would skip every stage, skip the push, find the version registered, and the gate would
answer "already champion": the demo reports that without the flows (and without Prefect's temporary
server, which is most of a run that does nothing)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from components.io import ADAPTER_FILE, sha256_file
from flows import dvc_repo
from flows.common import ConceptContext, concept_context


def could_be_unchanged(repo: Path, concept: str) -> bool:
    """A cheap first look (local files only): False where a run certainly has work to do."""
    lock = repo / "dvc.lock"
    return (
        lock.is_file()
        and f"evaluate@{concept}" in lock.read_text()
        and (repo / ".dvc" / "tmp" / f"conceptlab-pushed-{concept}.json").is_file()
    )


def _registered_champion(ctx: ConceptContext) -> dict | None:
    """The registration and gate verdict the flows would report, if the challenger is this adapter and
    evaluation and is the champion already; else None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.promote import CHAMPION, GATED, Check, GateVerdict
    from components.register import TAG, RegisterResult, evaluation_run_id

    registry, name = ctx.cfg.params.registry, ctx.cfg.concept.name
    adapter, metrics = ctx.layout.adapter / ADAPTER_FILE, ctx.layout.evaluation / "metrics.json"
    if not (adapter.is_file() and metrics.is_file()):
        return None
    client = MlflowClient(tracking_uri=ctx.tracking_uri)
    try:
        challenger = client.get_model_version_by_alias(name, registry.alias)
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    tags = challenger.tags
    if (
        champion.version != challenger.version
        or tags.get(f"{TAG}.adapter_sha256") != sha256_file(adapter)
        or tags.get(f"{TAG}.eval_metrics_sha256") != sha256_file(metrics)
    ):
        return None
    eval_run = evaluation_run_id(challenger)
    numbers = client.get_run(eval_run).data.metrics
    if not all(k in numbers for k in GATED):
        return None
    registration = RegisterResult(
        tracking_uri=ctx.tracking_uri,
        experiment=registry.experiment,
        run_id=challenger.run_id,
        model_name=name,
        version=str(challenger.version),
        alias=registry.alias,
        model_uri=f"models:/{name}@{registry.alias}",
        created=False,
        eval_run_id=eval_run,
        eval_recorded=False,
    )
    challenger_numbers = {k: numbers[k] for k in GATED}
    verdict = GateVerdict(  # what components.promote.promote answers for a challenger that is the champion
        model_name=name,
        challenger_version=str(challenger.version),
        reference="self",
        champion_version=str(champion.version),
        passed=True,
        promoted=False,
        checks=[Check(name="already_champion", passed=True, detail=f"v{challenger.version} is the champion")],
        challenger=challenger_numbers,
        reference_metrics=challenger_numbers,
    )
    return {"registration": registration.model_dump(), "verdict": verdict.model_dump(mode="json")}


def unchanged_result(repo: Path, concept: str, remote: str | None) -> dict | None:
    """What train_concept and promote would return for a run with nothing to do, or None if there is
    something to do (or it cannot tell). `dvc status` and the registry look-up run side by side."""
    ctx = concept_context(repo, concept)
    with ThreadPoolExecutor(max_workers=1) as pool:
        registered = pool.submit(_registered_champion, ctx)
        changed = dvc_repo.changed_stages(repo, concept)
        try:
            found = registered.result()
        except Exception:  # a registry that cannot answer now: the flows (with their retries) find out
            found = None
    if changed or found is None or not dvc_repo.already_pushed(repo, concept, remote):
        return None
    stages = [f"{stage}@{concept}" for stage in dvc_repo.STAGES]
    trained = {"ran": [], "skipped": stages, "registration": found["registration"]}
    return {"trained": trained, "verdict": found["verdict"]}
