"""A git merge driver for dvc.lock: merges stage by stage, not line by line.

dvc.lock interleaves the concepts' entries (curate@a, curate@b, caption@a, ...), so two runs of
different concepts that both rewrote dvc.lock meet in adjacent lines, and git's line merge reports a
conflict that is none. This driver takes each stage entry from the side that changed it; only an
entry both sides changed differently (the same concept reproduced twice from different inputs) is a
conflict. git runs it as `python dvc_lock_merge.py %O %A %B` (ancestor, ours, theirs) and takes the
merged file from %A; exit status 1 means a conflict, and stderr names the stages.

Runs as a script by path (flows.dvc_repo configures it), so it imports nothing of conceptlab.
"""

from __future__ import annotations

import sys
from pathlib import Path

MISSING = object()


def merge(ancestor: dict, ours: dict, theirs: dict) -> tuple[dict, list[str]]:
    """Three-way merge of parsed dvc.lock files; returns the merged data and the conflicting keys."""
    merged = dict(ours)
    conflicts = []
    for key in dict.fromkeys([*ours, *theirs]):  # ours' order first: a diff against it stays small
        if key == "stages":
            continue
        value, clash = _pick(ancestor.get(key, MISSING), ours.get(key, MISSING), theirs.get(key, MISSING))
        conflicts += [key] if clash else []
        _put(merged, key, value)
    stages = dict(ours.get("stages") or {})
    base_stages, their_stages = ancestor.get("stages") or {}, theirs.get("stages") or {}
    for name in dict.fromkeys([*stages, *their_stages]):
        value, clash = _pick(base_stages.get(name, MISSING), stages.get(name, MISSING), their_stages.get(name, MISSING))
        conflicts += [f"stages.{name}"] if clash else []
        _put(stages, name, value)
    if "stages" in ours or "stages" in theirs:
        merged["stages"] = stages
    return merged, conflicts


def _pick(base, ours, theirs):
    if ours == theirs or theirs == base:
        return ours, False
    if ours == base:
        return theirs, False
    return ours, True


def _put(mapping: dict, key, value) -> None:
    if value is MISSING:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _load(path: Path) -> dict:
    from ruamel.yaml import YAML

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return YAML(typ="safe").load(text) or {}


def _dump(data: dict, path: Path) -> None:
    from dvc.utils.serialize import dump_yaml  # DVC's own writer, so DVC's next write changes nothing

    dump_yaml(str(path), data)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: dvc_lock_merge.py ANCESTOR OURS THEIRS (git's %O %A %B)", file=sys.stderr)
        return 2
    ancestor, ours, theirs = (Path(arg) for arg in argv)
    merged, conflicts = merge(_load(ancestor), _load(ours), _load(theirs))
    if conflicts:
        print(f"dvc.lock: both sides changed {', '.join(conflicts)} differently", file=sys.stderr)
        return 1
    _dump(merged, ours)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
