"""dvc.lock's merge driver: two concepts' lineage commits made in parallel clones rebase over each
other cleanly (git's line merge conflicts on their neighbouring blocks), while the same stage changed
on both sides is still a conflict. Real git, real rebases."""

import subprocess

import yaml

from flows.lock_merge import git_config_args, merge_locks
from tests.conftest import ROOT


def entry(md5: str) -> dict:
    return {"cmd": "conceptlab train", "outs": [{"path": "work/x/adapter", "md5": md5, "size": 3}]}


def lock(**stages) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False)


BASE = {"curate@a": entry("a0"), "train@a": entry("a0")}  # concept a trained before
B_NEW = {"curate@b": entry("b1"), "train@b": entry("b1")}  # DVC appends a new stage's entry at the end
C_NEW = {"curate@c": entry("c1"), "train@c": entry("c1")}


def git(cwd, *args, check=True):
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def clone_with(tmp_path, origin, name, stages: dict):
    clone = tmp_path / name
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "config", "user.email", "t@t.test")
    git(clone, "config", "user.name", "t")
    (clone / "dvc.lock").write_text(lock(**{**BASE, **stages}))
    git(clone, "commit", "-qam", f"reproduce {name}")
    return clone


def two_parallel_commits(tmp_path, first: dict, second: dict):
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / ".gitattributes").write_text((ROOT / ".gitattributes").read_text())
    (seed / "dvc.lock").write_text(lock(**BASE))
    git(seed, "add", "-A")
    git(seed, "-c", "user.email=t@t.test", "-c", "user.name=t", "commit", "-qm", "base")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    one, two = clone_with(tmp_path, origin, "one", first), clone_with(tmp_path, origin, "two", second)
    git(one, "push", "-q", "origin", "main")
    assert git(two, "push", "-q", "origin", "main", check=False).returncode != 0, "rejected: main moved"
    git(two, "fetch", "-q", "origin")
    return two


def test_two_new_concepts_rebase_cleanly_with_the_driver(tmp_path):
    two = two_parallel_commits(tmp_path, B_NEW, C_NEW)
    git(two, *git_config_args(), "rebase", "-q", "origin/main")
    merged = yaml.safe_load((two / "dvc.lock").read_text())["stages"]
    assert merged == {**BASE, **B_NEW, **C_NEW}
    git(two, "push", "-q", "origin", "main")


def test_a_changed_and_a_new_concept_rebase_cleanly(tmp_path):
    a_changed = {"curate@a": entry("a1"), "train@a": entry("a1")}
    two = two_parallel_commits(tmp_path, C_NEW, a_changed)
    git(two, *git_config_args(), "rebase", "-q", "origin/main")
    assert yaml.safe_load((two / "dvc.lock").read_text())["stages"] == {**BASE, **a_changed, **C_NEW}


def test_without_the_driver_git_reports_a_conflict(tmp_path):
    """Why the driver exists: git's own line merge fails on the same two commits."""
    two = two_parallel_commits(tmp_path, B_NEW, C_NEW)
    assert git(two, "rebase", "-q", "origin/main", check=False).returncode != 0
    assert "<<<<<<<" in (two / "dvc.lock").read_text()


def test_the_same_stage_changed_on_both_sides_is_a_conflict(tmp_path):
    two = two_parallel_commits(tmp_path, {"train@a": entry("a1")}, {"train@a": entry("a2")})
    rebase = git(two, *git_config_args(), "rebase", "-q", "origin/main", check=False)
    assert rebase.returncode != 0
    assert "train@a" in rebase.stdout + rebase.stderr


def test_merge_keeps_deletions_and_additions():
    merged, conflicts = merge_locks(
        lock(**BASE),
        lock(**{k: v for k, v in BASE.items() if k != "train@a"}),
        lock(**BASE, **C_NEW),
    )
    assert conflicts == []
    assert list(yaml.safe_load(merged)["stages"]) == ["curate@a", "curate@c", "train@c"]
