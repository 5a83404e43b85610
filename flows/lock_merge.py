"""A git merge driver for dvc.lock: a three-way merge stage by stage, not line by line.

Concepts trained in parallel (retrain's fan-out: each concept in its own clone) each commit
dvc.lock with their own concept's stages changed and push; the later push rebases over the earlier.
dvc.lock lists each concept's stages as neighbouring YAML blocks (`curate@a`, `curate@b`, ...), so
git's line merge reports a conflict for two concepts that touched neighbouring blocks, although
they share nothing. This driver merges whole stage entries instead: an entry only one side changed
takes that side's version; an entry both sides changed differently is a real conflict (two runs of
the same concept), which fails the merge and so the rebase and the push.

Used as `merge=dvc-lock` in .gitattributes, with the driver given on the command line
(`git -c merge.dvc-lock.driver=...`, see ``git_config_args``), since a fresh clone has no config of
its own. Imports only PyYAML: git runs it as a script, outside the project's package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DRIVER = "dvc-lock"


def merge_entries(base: dict, ours: dict, theirs: dict) -> tuple[dict, list[str]]:
    """Three-way merge of two mappings by key; returns (merged, keys both sides changed differently).
    Ours' key order first, then keys only theirs has."""
    merged, conflicts = {}, []
    for key in [*ours, *(k for k in theirs if k not in ours), *(k for k in base if k not in ours and k not in theirs)]:
        b, o, t = base.get(key), ours.get(key), theirs.get(key)
        if o == t:
            value = o
        elif o == b:
            value = t
        elif t == b:
            value = o
        else:
            conflicts.append(str(key))
            value = o
        if value is not None:
            merged[key] = value
    return merged, conflicts


def merge_locks(base: str, ours: str, theirs: str) -> tuple[str, list[str]]:
    """Merged dvc.lock text and the stages in conflict (empty if none)."""
    b, o, t = (yaml.safe_load(text) or {} for text in (base, ours, theirs))
    stages, conflicts = merge_entries(b.get("stages", {}), o.get("stages", {}), t.get("stages", {}))
    top, top_conflicts = merge_entries(
        {k: v for k, v in b.items() if k != "stages"},
        {k: v for k, v in o.items() if k != "stages"},
        {k: v for k, v in t.items() if k != "stages"},
    )
    return yaml.safe_dump({**top, "stages": stages}, sort_keys=False), top_conflicts + conflicts


def git_config_args() -> list[str]:
    """`git -c ...` arguments that define the driver for one git command (a rebase, a merge)."""
    return [
        "-c",
        f"merge.{DRIVER}.name=dvc.lock stage-wise merge",
        "-c",
        f"merge.{DRIVER}.driver={sys.executable} {Path(__file__).resolve()} %O %A %B",
    ]


def main(argv: list[str]) -> int:
    """git's contract: %O (base) %A (ours; the result is written here) %B (theirs); exit 0 if clean."""
    base, ours, theirs = (Path(p) for p in argv)
    merged, conflicts = merge_locks(*(p.read_text(encoding="utf-8") for p in (base, ours, theirs)))
    if conflicts:
        print(f"dvc.lock: both sides changed stage(s) {', '.join(conflicts)} differently", file=sys.stderr)
        return 1
    ours.write_text(merged, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
