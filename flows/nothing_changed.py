"""Whether a demo run would do nothing, found without starting Prefect: DVC has every stage of the
concept up to date, the outputs dvc.lock names were pushed to the remote by the last run, and the
registry's `challenger` holds this adapter with this evaluation and is the `champion` already. Then
train_concept would skip every stage, skip the push, find the version registered, and the gate would
answer "already champion": the demo reports that without the flows (and without Prefect's temporary
server, which is most of a run that does nothing)."""

from __future__ import annotations

import json
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


def _record_file(ctx: ConceptContext) -> Path:
    return ctx.repo / ".dvc" / "tmp" / f"conceptlab-registered-{ctx.cfg.concept.name}.json"


def _sqlite_store(tracking_uri: str) -> dict | None:
    """The local SQLite registry's file stamp (any write to the registry changes it); None for a server."""
    prefix = "sqlite:///"
    path = Path(tracking_uri[len(prefix) :])
    if not tracking_uri.startswith(prefix) or not path.is_file():
        return None
    stat = path.stat()
    return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}


def _already_champion(registration: dict, challenger_numbers: dict) -> dict:
    from components.promote import Check, GateVerdict

    version = registration["version"]
    return GateVerdict(  # what components.promote.promote answers for a challenger that is the champion
        model_name=registration["model_name"],
        challenger_version=version,
        reference="self",
        champion_version=version,
        passed=True,
        promoted=False,
        checks=[Check(name="already_champion", passed=True, detail=f"v{version} is the champion")],
        challenger=challenger_numbers,
        reference_metrics=challenger_numbers,
    ).model_dump(mode="json")


def _stamp(ctx: ConceptContext) -> dict | None:
    adapter, metrics = ctx.layout.adapter / ADAPTER_FILE, ctx.layout.evaluation / "metrics.json"
    store = _sqlite_store(ctx.tracking_uri)
    if store is None or not (adapter.is_file() and metrics.is_file()):
        return None
    return {
        "tracking_uri": ctx.tracking_uri,
        "store": store,
        "adapter_sha256": sha256_file(adapter),
        "eval_metrics_sha256": sha256_file(metrics),
    }


def record_outcome(repo: Path, concept: str, trained: dict, verdict: dict) -> None:
    """After a demo run whose challenger is now the champion, with a local SQLite registry: notes the
    registry file's stamp with the adapter and evaluation, so the next run needs no MLflow to see that
    nothing changed there (any write to the registry, by anyone, changes the stamp)."""
    ctx = concept_context(repo, concept)
    champion = verdict["passed"] and (verdict["promoted"] or verdict["reference"] == "self")
    if not champion:
        _record_file(ctx).unlink(missing_ok=True)
        return
    registration = {**trained["registration"], "created": False, "eval_recorded": False}
    _write_record(ctx, registration, verdict["challenger"])


def _write_record(ctx: ConceptContext, registration: dict, challenger_numbers: dict) -> None:
    stamp = _stamp(ctx)
    if stamp is None:
        _record_file(ctx).unlink(missing_ok=True)
        return
    stamp |= {"registration": registration, "challenger": challenger_numbers}
    _record_file(ctx).write_text(json.dumps(stamp))


def _recorded_champion(ctx: ConceptContext) -> dict | None:
    try:
        record = json.loads(_record_file(ctx).read_text())
        if {k: record[k] for k in ("tracking_uri", "store", "adapter_sha256", "eval_metrics_sha256")} != _stamp(ctx):
            return None
        return {
            "registration": record["registration"],
            "verdict": _already_champion(record["registration"], record["challenger"]),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _registered_champion(ctx: ConceptContext) -> dict | None:
    """The registration and gate verdict the flows would report, if the challenger is this adapter and
    evaluation and is the champion already; else None."""
    recorded = _recorded_champion(ctx)
    if recorded is not None:
        return recorded
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.promote import CHAMPION, GATED
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
    registration, challenger_numbers = registration.model_dump(), {k: numbers[k] for k in GATED}
    _write_record(ctx, registration, challenger_numbers)  # the next look needs no MLflow while the store is as now
    return {"registration": registration, "verdict": _already_champion(registration, challenger_numbers)}


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
