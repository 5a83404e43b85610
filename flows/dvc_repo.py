"""The DVC commands the flows run, on one repository, one at a time.

DVC decides what is skipped (`dvc repro` compares dvc.lock with the workspace); this module only
runs it, serialises commands with a file lock (two DVC commands on one repository collide on its
lock), and reads dvc.lock for lineage.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock

STAGES = ("curate", "caption", "prior", "train", "evaluate")


class DvcError(RuntimeError):
    """A DVC command failed; the message carries its output."""


@dataclass(frozen=True)
class ReproReport:
    ran: list[str]
    skipped: list[str]
    output: str


def _env() -> dict[str, str]:
    # Stage commands call `conceptlab`: put this interpreter's scripts folder first on PATH.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def dvc(repo: Path, *args: str, timeout: float | None = None, check: bool = True) -> str:
    lock = FileLock(str(repo / ".dvc" / "tmp" / "conceptlab-flows.lock"))
    (repo / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    with lock:
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=repo,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise DvcError(f"`dvc {' '.join(args)}` failed in {repo} (exit {proc.returncode}):\n{output[-4000:]}")
    return output


def repro(repo: Path, concept: str, timeout: float | None = None) -> ReproReport:
    """`dvc repro` of the concept's last stage (and so everything before it)."""
    output = dvc(repo, "repro", f"evaluate@{concept}", timeout=timeout)
    ran = re.findall(r"Running stage '([^']+)'", output)
    skipped = re.findall(r"Stage '([^']+)' didn't change, skipping", output)
    return ReproReport(ran=ran, skipped=skipped, output=output)


def changed_stages(repo: Path, concept: str) -> list[str]:
    """Stages of the concept whose deps, params or outs differ from dvc.lock."""
    import json

    out = dvc(repo, "status", "--json", f"evaluate@{concept}", "--with-deps")
    start = out.find("{")
    status = json.loads(out[start:]) if start >= 0 else {}
    return sorted(status)


def commit_lock(repo: Path, concept: str) -> str:
    """Commits dvc.lock and the DVC pointer files after a run, so the adapter's data has a git revision
    (`git checkout <rev> && dvc pull` restores it). Returns the HEAD commit; no-op outside git."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)

    if git("rev-parse", "--is-inside-work-tree").returncode != 0:
        return "not a git repository"
    git(
        "add",
        "dvc.lock",
        *(str(p.relative_to(repo)) for p in repo.glob("**/*.dvc")),
        *(str(p.relative_to(repo)) for p in (repo / "work").glob("**/.gitignore")),
        *(str(p.relative_to(repo)) for p in (repo / "work").glob("*/eval/metrics.json")),
    )
    if git("diff", "--cached", "--quiet").returncode != 0:
        git("commit", "-q", "-m", f"conceptlab: reproduce {concept}")
    return git("rev-parse", "HEAD").stdout.strip()


def push(repo: Path, remote: str | None = None) -> str:
    return dvc(repo, "push", *(["-r", remote] if remote else []))


def lock_hashes(repo: Path, concept: str) -> dict[str, str]:
    """md5 of each out of the concept's stages as recorded in dvc.lock: the data's lineage."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    hashes = {}
    for stage in STAGES:
        for out in lock["stages"].get(f"{stage}@{concept}", {}).get("outs", []):
            name = Path(out["path"]).name
            hashes[f"dvc.{stage}.{name}.md5"] = out.get("md5", "")
    return hashes
