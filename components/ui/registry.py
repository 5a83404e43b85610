"""What the web app shows, read from the MLflow registry and tracking server.

Names of the tags come from their writers: components/register.py (``conceptlab.*``: lineage, base
model, the version's current evaluation run) and components/promote.py (``gate.*``: verdict and
checks). A version's numbers are read from its current evaluation run, as the gate reads them.
Promotion by hand writes ``promotion.*`` tags, so the registry itself says who moved `champion`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from components.promote import CHALLENGER, CHAMPION
from components.register import TAG, evaluation_run_id

PLOTTED = ("clip_i", "clip_t", "prior_drift")
SHOWN = ("clip_i", "clip_t", "prior_drift", "clip_i_gain", "diversity", "base_clip_i", "base_clip_t")
LABELS = {
    "clip_i": "CLIP-I",
    "clip_t": "CLIP-T",
    "prior_drift": "prior drift",
    "clip_i_gain": "CLIP-I gain",
    "diversity": "diversity",
    "base_clip_i": "base CLIP-I",
    "base_clip_t": "base CLIP-T",
}
GRID = "evaluation/grid.png"
LOSS = "train_loss"


class Check(BaseModel):
    name: str
    detail: str
    passed: bool


class Version(BaseModel):
    version: str
    aliases: list[str]
    created: datetime
    run_id: str  # the training run (fixed at registration)
    eval_run_id: str  # the version's current evaluation
    metrics: dict[str, float]
    base_model: str
    adapter_sha256: str
    git_commit: str
    flow_run_id: str
    user: str
    gate_verdict: str  # passed / refused / "not gated"
    gate_reference: str
    checks: list[Check]
    promoted_by: str  # promotion by hand ("" when the gate or nobody moved it)
    promoted_at: str
    tags: dict[str, str]


class Concept(BaseModel):
    name: str
    description: str
    champion: str | None
    challenger: str | None
    base_model: str
    last_trained: datetime | None
    latest: str | None
    verdict: str  # the gate's verdict on the challenger
    versions: list[Version]

    def version(self, number: str) -> Version | None:
        return next((v for v in self.versions if v.version == number), None)


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _checks(tags: dict[str, str]) -> list[Check]:
    failed = set(tags.get("gate.failed_checks", "").split(","))
    prefix = "gate.check."
    return [
        Check(name=k[len(prefix) :], detail=v, passed=k[len(prefix) :] not in failed)
        for k, v in sorted(tags.items())
        if k.startswith(prefix)
    ]


def _version(client, mv, runs: dict) -> Version:
    eval_id = evaluation_run_id(mv)
    for run_id in {mv.run_id, eval_id}:
        if run_id not in runs:
            runs[run_id] = client.get_run(run_id)
    training, evaluation = runs[mv.run_id], runs[eval_id]
    tags, run_tags = dict(mv.tags), training.data.tags
    return Version(
        version=str(mv.version),
        aliases=sorted(getattr(mv, "aliases", []) or []),
        created=_time(mv.creation_timestamp),
        run_id=mv.run_id,
        eval_run_id=eval_id,
        metrics=dict(evaluation.data.metrics),
        base_model=tags.get(f"{TAG}.base_model") or run_tags.get(f"{TAG}.base_model", "?"),
        adapter_sha256=tags.get(f"{TAG}.adapter_sha256", ""),
        git_commit=tags.get(f"{TAG}.git_commit") or run_tags.get(f"{TAG}.git_commit", ""),
        flow_run_id=evaluation.data.tags.get(f"{TAG}.prefect_flow_run_id")
        or run_tags.get(f"{TAG}.prefect_flow_run_id", ""),
        user=run_tags.get("mlflow.user", ""),
        gate_verdict=tags.get("gate.verdict", "not gated"),
        gate_reference=tags.get("gate.reference", ""),
        checks=_checks(tags),
        promoted_by=tags.get("promotion.by", ""),
        promoted_at=tags.get("promotion.at", ""),
        tags=tags,
    )


def concept(client, name: str) -> Concept:
    """One registered concept with every version, oldest first (raises MlflowException if unknown)."""
    model = client.get_registered_model(name)
    aliases = dict(model.aliases or {})
    runs: dict = {}
    versions = sorted(
        (_version(client, mv, runs) for mv in client.search_model_versions(f"name = '{name}'")),
        key=lambda v: int(v.version),
    )
    for v in versions:  # search results may omit aliases; the registered model has them all
        v.aliases = sorted(a for a, num in aliases.items() if str(num) == v.version)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    latest = versions[-1] if versions else None
    ch = next((v for v in versions if v.version == str(challenger)), None)
    return Concept(
        name=name,
        description=model.description or "",
        champion=str(champion) if champion is not None else None,
        challenger=str(challenger) if challenger is not None else None,
        base_model=latest.base_model if latest else "?",
        last_trained=_time(max((runs[v.run_id].info.start_time for v in versions), default=None)),
        latest=latest.version if latest else None,
        verdict=ch.gate_verdict if ch else "no challenger",
        versions=versions,
    )


def concepts(client) -> list[Concept]:
    return [concept(client, m.name) for m in sorted(client.search_registered_models(), key=lambda m: m.name)]


def promote_by_hand(client, name: str, version: str, user: str, now: datetime | None = None) -> str | None:
    """Moves `champion` to ``version`` and records who did it, when, and what it replaced, as tags of
    that version. The tags go first: a failure leaves the old champion in place. Returns the previous
    champion's version (None if there was none)."""
    from mlflow.exceptions import MlflowException

    client.get_model_version(name, version)  # an unknown version raises before anything is written
    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = None
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for key, value in {
        "promotion.by": user,
        "promotion.at": when,
        "promotion.via": "conceptlab ui (by hand, not by the gate)",
        "promotion.previous_champion": previous or "none",
    }.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    return previous


def instance_prompt(client, name: str) -> str:
    """ "a photo of a sks triangle" for a concept: its identifier and class noun as its newest
    training run logged them (register.py logs them as params)."""
    versions = client.search_model_versions(f"name = '{name}'")
    newest = max(versions, key=lambda v: int(v.version))
    params = client.get_run(newest.run_id).data.params
    return f"a photo of a {params['concept.instance_token']} {params['concept.class_noun']}"
