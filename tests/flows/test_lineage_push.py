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
    origin, ours, theirs = team
    mine = reproduce(ours, "alpha", "alpha v2\n")
    other = reproduce(theirs, "beta", "beta v2\n")
    run(["git", "push", "-q", "origin", "main"], theirs)  # the colleague's run reached the remote first

    pushed = dvc_repo.push_commit(ours, mine, "alpha")

    assert pushed != mine, "rebased over the colleague's commit"
    assert head(origin, "main") == pushed == head(ours)
    assert head(ours, f"{pushed}^") == other
    def lock_at(rev):
        return yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], ours))["stages"]

    merged, my_lock, their_lock = lock_at(pushed), lock_at(mine), lock_at(other)
    for stage in ("train@alpha", "evaluate@alpha"):
        assert merged[stage] == my_lock[stage] != their_lock[stage]
    for stage in ("train@beta", "evaluate@beta"):
        assert merged[stage] == their_lock[stage] != my_lock[stage]
    assert dvc_repo.changed_stages(ours, "alpha") == []
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
