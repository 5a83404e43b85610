"""Lineage that survives the worker: the dvc.lock commit reaches the team's remote, rebased over what
others pushed meanwhile, and a real conflict stops before anything could name a commit the remote lacks.

A tiny real DVC pipeline (two stages per concept, `cp` commands, two concepts) in plain git
repositories: a bare remote and two clones, as two workers would have."""

from __future__ import annotations

import shutil

import pytest
import yaml

from flows import dvc_repo
from flows.dvc_lock_merge import merge
from tests.conftest import run

DVC_YAML = {
    "stages": {
        "train": {
            "foreach": "${concepts}",
            "do": {
                "cmd": "mkdir -p work/${item} && cat shared.txt concepts/${item}/photo.txt > work/${item}/adapter.txt",
                "deps": ["shared.txt", "concepts/${item}/photo.txt"],  # shared.txt: like the code in components/
                "outs": ["work/${item}/adapter.txt"],
            },
        },
        "evaluate": {
            "foreach": "${concepts}",
            "do": {
                "cmd": "cp work/${item}/adapter.txt work/${item}/eval.txt",
                "deps": ["work/${item}/adapter.txt"],
                "outs": ["work/${item}/eval.txt"],
            },
        },
    }
}


def head(repo, ref: str = "HEAD") -> str:
    return run(["git", "rev-parse", ref], repo).strip()


def reproduce(repo, concept: str, photo: str) -> str:
    """A person's (or another worker's) run: new photo, `dvc repro`, the lineage commit."""
    (repo / "concepts" / concept / "photo.txt").write_text(photo)
    run(["dvc", "repro", "-q", f"evaluate@{concept}"], repo)
    return dvc_repo.commit_lock(repo, concept)


@pytest.fixture
def team(tmp_path):
    """A bare remote holding both concepts reproduced, and two clones of it: ours and a colleague's."""
    source = tmp_path / "source"
    for concept in ("alpha", "beta"):
        (source / "concepts" / concept).mkdir(parents=True)
        (source / "concepts" / concept / "photo.txt").write_text(f"{concept} v1\n")
    (source / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (source / "params.yaml").write_text("concepts: [alpha, beta]\n")
    (source / "shared.txt").write_text("training code v1\n")
    run(["git", "init", "-q", "-b", "main"], source)
    run(["dvc", "init", "-q"], source)
    run(["dvc", "config", "core.analytics", "false"], source)
    run(["dvc", "repro", "-q"], source)
    run(["git", "add", "-A"], source)
    run(["git", "-c", "user.name=lead", "-c", "user.email=lead@t", "commit", "-q", "-m", "two concepts"], source)
    run(["git", "clone", "-q", "--bare", str(source), str(tmp_path / "origin.git")], tmp_path)
    clones = {}
    for name in ("ours", "theirs"):
        run(["git", "clone", "-q", str(tmp_path / "origin.git"), name], tmp_path)
        run(["git", "config", "user.name", name], tmp_path / name)
        run(["git", "config", "user.email", f"{name}@t"], tmp_path / name)
        clones[name] = tmp_path / name
    for clone in clones.values():  # each clone has the outputs dvc.lock describes (as `dvc pull` gives them)
        shutil.copytree(source / "work", clone / "work", dirs_exist_ok=True)
        assert run(["git", "status", "--porcelain"], clone) == ""
    return tmp_path / "origin.git", clones["ours"], clones["theirs"]


def test_push_rebases_over_another_concepts_run(team):
    """The colleague added a concept: its entries are appended to dvc.lock right after the entry this
    run rewrote (beta's evaluate, the file's last), which git's line merge reports as a conflict; the
    dvc.lock merge driver takes each stage from the side that changed it."""
    origin, ours, theirs = team
    assert list(yaml.safe_load((ours / "dvc.lock").read_text())["stages"])[-1] == "evaluate@beta"
    mine = reproduce(ours, "beta", "beta, second version\n")  # another size: the last line changes too
    (theirs / "params.yaml").write_text("concepts: [alpha, beta, gamma]\n")
    (theirs / "concepts" / "gamma").mkdir()
    other = reproduce(theirs, "gamma", "gamma v1\n")
    run(["git", "push", "-q", "origin", "main"], theirs)  # the colleague's run reached the remote first

    pushed = dvc_repo.push_commit(ours, mine, "beta")

    assert pushed != mine, "rebased over the colleague's commit"
    assert head(origin, "main") == pushed == head(ours)
    assert head(ours, f"{pushed}^") == other

    def lock_at(rev):
        return yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], ours))["stages"]

    merged, my_lock, their_lock = lock_at(pushed), lock_at(mine), lock_at(other)
    for stage in ("train@beta", "evaluate@beta"):
        assert merged[stage] == my_lock[stage] != their_lock[stage]
    for stage in ("train@gamma", "evaluate@gamma"):
        assert merged[stage] == their_lock[stage] and stage not in my_lock
    assert merged["train@alpha"] == my_lock["train@alpha"] == their_lock["train@alpha"]
    assert dvc_repo.changed_stages(ours, "beta") == []
    run(["git", "pull", "-q"], theirs)
    run(["dvc", "repro", "-q"], theirs)
    assert run(["git", "status", "--porcelain", "dvc.lock"], theirs) == "", "the merged dvc.lock is what DVC writes"


def test_a_real_conflict_fails_and_leaves_both_sides_as_they_were(team):
    origin, ours, theirs = team
    mine = reproduce(ours, "alpha", "alpha v2\n")
    other = reproduce(theirs, "alpha", "alpha from a colleague\n")  # the same concept, other photos
    run(["git", "push", "-q", "origin", "main"], theirs)

    with pytest.raises(dvc_repo.LineageConflict, match=r"conflict with this run's commit in .*dvc\.lock"):
        dvc_repo.push_commit(ours, mine, "alpha")

    assert head(origin, "main") == other, "the remote keeps the colleague's commit"
    assert head(ours) == mine and run(["git", "status", "--porcelain", "--untracked-files=no"], ours) == ""


def test_commits_that_change_a_concepts_inputs_are_a_conflict_too(team):
    """No line clashes, but the colleague changed code alpha's stages depend on: the rebased commit
    would name an adapter made by other code than the commit holds."""
    origin, ours, theirs = team
    mine = reproduce(ours, "alpha", "alpha v2\n")
    (theirs / "shared.txt").write_text("training code v2\n")
    run(["git", "commit", "-qam", "new training code"], theirs)
    run(["git", "push", "-q", "origin", "main"], theirs)
    other = head(theirs)

    with pytest.raises(dvc_repo.LineageConflict, match=r"changed what alpha's stages depend on"):
        dvc_repo.push_commit(ours, mine, "alpha")
    assert head(origin, "main") == other and head(ours) == mine


def test_merge_takes_each_stage_from_the_side_that_changed_it():
    base = {"schema": "2.0", "stages": {"train@a": {"md5": 1}, "train@b": {"md5": 1}, "train@c": {"md5": 1}}}
    ours = {"schema": "2.0", "stages": {"train@a": {"md5": 2}, "train@b": {"md5": 1}}}  # c removed
    theirs = {"schema": "2.0", "stages": {"train@a": {"md5": 1}, "train@b": {"md5": 3}, "train@c": {"md5": 1},
                                          "train@d": {"md5": 4}}}  # fmt: skip
    merged, conflicts = merge(base, ours, theirs)
    assert conflicts == []
    assert merged["stages"] == {"train@a": {"md5": 2}, "train@b": {"md5": 3}, "train@d": {"md5": 4}}

    _, conflicts = merge(base, ours, {**theirs, "stages": {**theirs["stages"], "train@a": {"md5": 5}}})
    assert conflicts == ["stages.train@a"]


@pytest.mark.slow
def test_the_flow_run_fails_before_registering_when_its_commit_cannot_be_pushed(tmp_path, prefect_harness):
    """train_concept as a deployment runs it (git_push): a colleague pushed a change to the concept's
    inputs while it trained. The run fails at push_commit with LineageConflict, nothing is registered,
    and the remote keeps the colleague's commit."""
    from mlflow import MlflowClient
    from prefect.states import State

    from flows.train_concept import train_concept
    from tests.conftest import FAST_FLOW_PARAMS, make_project_repo

    source = make_project_repo(tmp_path / "source", FAST_FLOW_PARAMS)
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "dvc-remote")], source)
    run(["git", "commit", "-qam", "DVC remote"], source)
    run(["dvc", "push", "-q"], source)
    run(["git", "clone", "-q", "--bare", str(source), str(tmp_path / "origin.git")], tmp_path)
    run(["git", "clone", "-q", str(tmp_path / "origin.git"), "worker"], tmp_path)
    worker = tmp_path / "worker"
    run(["dvc", "pull", "-q", "--allow-missing"], worker)  # the photos, as prefect.yaml's pull step does
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], source)
    concept_yaml = source / "concepts" / "toy-robot" / "concept.yaml"
    concept_yaml.write_text(concept_yaml.read_text().replace("overrides: {}", "overrides: {train: {seed: 1}}"))
    assert concept_yaml.read_text() != run(["git", "show", "HEAD:concepts/toy-robot/concept.yaml"], source)
    run(["git", "commit", "-qam", "a colleague edits the concept"], source)
    run(["git", "push", "-q", "origin", "main"], source)

    state: State = train_concept("toy-robot", repo=str(worker), git_push=True, return_state=True)

    assert state.is_failed()
    with pytest.raises(dvc_repo.LineageConflict, match="changed what toy-robot's stages depend on"):
        state.result()
    assert head(tmp_path / "origin.git", "main") == head(source), "the remote keeps the colleague's commit"
    store = f"sqlite:///{worker}/mlflow.db"
    assert not (worker / "mlflow.db").exists() or MlflowClient(store).search_registered_models() == []
