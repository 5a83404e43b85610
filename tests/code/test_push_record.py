"""The push record that lets a run skip `dvc push` (flows/dvc_repo.py): it holds only while dvc.lock's
outs, the remote and the repository's DVC configuration are what the last successful push saw."""

from pathlib import Path

import yaml

from flows.dvc_repo import already_pushed, record_push


def _repo(tmp_path: Path, adapter_md5: str = "a" * 32) -> Path:
    (tmp_path / ".dvc").mkdir(exist_ok=True)
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = team\n")
    lock = {
        "schema": "2.0",
        "stages": {
            "train@toy": {"outs": [{"path": "work/toy/adapter", "md5": adapter_md5 + ".dir"}]},
            "evaluate@toy": {"outs": [{"path": "work/toy/eval/grid.png", "md5": "b" * 32}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    return tmp_path


def test_a_fresh_clone_has_not_pushed(tmp_path):
    assert not already_pushed(_repo(tmp_path), "toy", "team")


def test_the_record_holds_for_the_same_outs_and_remote(tmp_path):
    repo = _repo(tmp_path)
    record_push(repo, "toy", "team")
    assert already_pushed(repo, "toy", "team")
    assert not already_pushed(repo, "toy", "other"), "another remote has not received them"
    assert not already_pushed(repo, "other-concept", "team")


def test_new_outs_or_an_edited_remote_need_a_push(tmp_path):
    repo = _repo(tmp_path)
    record_push(repo, "toy", "team")
    _repo(tmp_path, adapter_md5="c" * 32)  # a new adapter in dvc.lock
    assert not already_pushed(repo, "toy", "team")
    record_push(repo, "toy", "team")
    (repo / ".dvc" / "config.local").write_text("['remote \"team\"']\n    url = s3://elsewhere\n")
    assert not already_pushed(repo, "toy", "team"), "the remote's URL changed"
