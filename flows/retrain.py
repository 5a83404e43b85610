"""retrain: the scheduled flow. Retrains and gates only the concepts whose tracked data or params
changed (DVC's status against dvc.lock), or that have no champion yet."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import dvc_repo
from flows.common import concept_context, listed_concepts
from flows.promote import promote
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


@flow(name="retrain", log_prints=True)
def retrain(
    repo: str = ".", remote: str | None = None, push_outputs: bool = True, git_push: bool = False
) -> dict[str, dict]:
    logger = get_run_logger()
    results = {}
    for concept in listed_concepts(repo):
        due, why = needs_training(repo, concept)
        logger.info("%s: %s", concept, why)
        if not due:
            results[concept] = {"retrained": False, "why": why}
            continue
        trained = train_concept(concept, repo=repo, remote=remote, push_outputs=push_outputs, git_push=git_push)
        verdict = promote(concept, repo=repo)
        results[concept] = {"retrained": True, "why": why, "ran": trained["ran"], "promoted": verdict["promoted"]}
    return results
