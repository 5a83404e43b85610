"""The DVC commands the flows run, on one repository, one at a time.

DVC decides what is skipped (`dvc repro` compares dvc.lock with the workspace); this module only
runs it, serialises commands with a file lock (two DVC commands on one repository collide on its
lock), commits dvc.lock, and reads dvc.lock for lineage. Every git and DVC command's exit status is
checked: a failure raises with the command's output instead of leaving a wrong lineage behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

STAGES = ("curate", "caption", "prior", "train", "evaluate")


class DvcError(RuntimeError):
    """A DVC command failed; the message carries its output."""


class GitError(RuntimeError):
    """A git command failed, or the repository is in a state a commit would misdescribe."""


# Used for the flows' commits only on a machine with no git identity configured (a fresh worker or
# container); a configured user.name/user.email, or GIT_AUTHOR_*/GIT_COMMITTER_*, always wins.
BOT_NAME = "conceptlab-bot"
BOT_EMAIL = "conceptlab-bot@users.noreply.conceptlab.invalid"


@dataclass(frozen=True)
class ReproReport:
    ran: list[str]
    skipped: list[str]
    output: str


def _env(repo: Path) -> dict[str, str]:
    # Stage commands call `conceptlab`: put this interpreter's scripts folder first on PATH, and the
    # repository first on PYTHONPATH, so a stage runs the code that dvc.lock hashes (the repository's
    # components/), not whichever checkout the environment's editable install points at (on a worker,
    # each flow run's `uv sync` re-points it at its own clone).
    bin_dir = str(Path(sys.executable).parent)
    pythonpath = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": pythonpath}


def dvc(repo: Path, *args: str, timeout: float | None = None, check: bool = True, lock: bool = True) -> str:
    """Runs one DVC command; ``lock=False`` only for commands that read the configuration (they may
    run beside another DVC command)."""
    (repo / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    with FileLock(str(repo / ".dvc" / "tmp" / "conceptlab-flows.lock")) if lock else nullcontext():
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=repo,
            env=_env(Path(repo).resolve()),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise DvcError(f"`dvc {' '.join(args)}` failed in {repo} (exit {proc.returncode}):\n{output[-4000:]}")
    return output


class ConceptBusy(RuntimeError):
    """Another flow run held the concept's lock in this repository for longer than we wait."""


@contextmanager
def concept_lock(
    repo: Path, concept: str, timeout: float = 7 * 3600, on_wait: Callable[[Path], object] | None = None
) -> Iterator[None]:
    """Held across one concept's whole sequence in a repository (repro, push, commit, register).

    The per-command lock in `dvc` keeps two DVC commands apart, but not two sequences: a second
    run of the concept would reproduce between the first's repro and its push or commit, or register
    while the first is still registering. With this lock the second run waits, then finds everything
    done (DVC skips, the registry has the version). Other concepts are not blocked: one lock file
    per concept. The kernel releases it when its process dies, so a killed worker leaves none behind.
    ``on_wait(lock_file)`` is called once when another run holds it."""
    (repo / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    path = repo / ".dvc" / "tmp" / f"conceptlab-concept-{concept}.lock"
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(path)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise ConceptBusy(
                f"another flow run of {concept} in {repo} has held {path} for over {timeout:.0f} s; "
                "wait for it to finish, or stop it (the lock goes with its process)"
            ) from None
    try:
        yield
    finally:
        lock.release()


def repro(repo: Path, concept: str, timeout: float | None = None) -> ReproReport:
    """`dvc repro` of the concept's last stage (and so everything before it)."""
    output = dvc(repo, "repro", f"evaluate@{concept}", timeout=timeout)
    ran = re.findall(r"Running stage '([^']+)'", output)
    skipped = re.findall(r"Stage '([^']+)' didn't change, skipping", output)
    return ReproReport(ran=ran, skipped=skipped, output=output)


def changed_stages(repo: Path, concept: str) -> list[str]:
    """Stages of the concept whose deps, params or outs differ from dvc.lock."""
    out = dvc(repo, "status", "--json", f"evaluate@{concept}", "--with-deps")
    start = out.find("{")
    status = json.loads(out[start:]) if start >= 0 else {}
    return sorted(status)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GitError(f"`git {' '.join(args)}` failed in {repo} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def identity_args(repo: Path) -> list[str]:
    """`-c user.name=... -c user.email=...` for the bot, only where git has no identity of its own
    (`git var` fails exactly where `git commit` would stop with "Author identity unknown")."""
    known = all(
        git(repo, "var", ident, check=False).returncode == 0 for ident in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT")
    )
    return [] if known else ["-c", f"user.name={BOT_NAME}", "-c", f"user.email={BOT_EMAIL}"]


def _lock_dep_paths(repo: Path, concept: str) -> list[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    stages = [lock["stages"].get(f"{stage}@{concept}", {}) for stage in STAGES]
    return sorted({dep["path"] for stage in stages for dep in stage.get("deps", [])})


def commit_lock(repo: Path, concept: str) -> str:
    """Commits dvc.lock with what it describes (DVC pointer files, the metrics, params.yaml, dvc.yaml,
    the concept's folder), so `git checkout <rev> && dvc pull` restores the adapter; call it only
    after `dvc push` succeeded. Returns the commit, whose dvc.lock is the workspace's; "not a git
    repository" for a DVC repository without git. Raises GitError if a git-tracked input of the
    concept's stages has uncommitted changes the commit would leave out (commit them first)."""
    if git(repo, "rev-parse", "--is-inside-work-tree", check=False).returncode != 0:
        return "not a git repository"
    paths = [
        "dvc.lock",
        *(name for name in ("dvc.yaml", "params.yaml") if (repo / name).exists()),
        f"concepts/{concept}",  # a folder pathspec: files git ignores (DVC-tracked photos) stay out
        *(str(p.relative_to(repo)) for p in repo.glob("*.dvc")),
        *(str(p.relative_to(repo)) for p in (repo / "concepts").glob("**/*.dvc")),
        *(str(p.relative_to(repo)) for p in (repo / "work").glob("**/.gitignore")),
        *(str(p.relative_to(repo)) for p in (repo / "work").glob("*/eval/metrics.json")),
    ]
    git(repo, "add", "-A", "--", *paths)
    unstaged = set(git(repo, "diff", "--name-only").stdout.split())
    left_out = sorted(
        f for f in unstaged for dep in _lock_dep_paths(repo, concept) if f == dep or f.startswith(dep + "/")
    )
    if left_out:
        raise GitError(
            f"{repo}: {', '.join(left_out)} changed but are not committed, and dvc.lock depends on them; "
            "commit them first, or the commit's dvc.lock would describe other code than the commit holds"
        )
    if git(repo, "diff", "--cached", "--quiet", check=False).returncode != 0:
        git(repo, *identity_args(repo), "commit", "-q", "-m", f"conceptlab: reproduce {concept}")
    if git(repo, "diff", "--quiet", "HEAD", "--", "dvc.lock", check=False).returncode != 0:
        raise GitError(f"{repo}: dvc.lock differs from HEAD's after the commit")
    return git(repo, "rev-parse", "HEAD").stdout.strip()


class LineageConflict(GitError):
    """The branch moved meanwhile in a way this run's lineage commit cannot be rebased over."""


MERGE_DRIVER = "conceptlab-dvc-lock"


def _merge_driver_args() -> list[str]:
    """`-c` settings that make git merge dvc.lock stage by stage (flows/dvc_lock_merge.py); the
    attribute that selects the driver is set in the clone's .git/info/attributes (untracked)."""
    script = Path(__file__).with_name("dvc_lock_merge.py")
    return [
        "-c", f"merge.{MERGE_DRIVER}.name=dvc.lock stage by stage",
        "-c", f'merge.{MERGE_DRIVER}.driver="{sys.executable}" "{script}" %O %A %B',
    ]  # fmt: skip


def _select_merge_driver(repo: Path) -> None:
    attributes = Path(git(repo, "rev-parse", "--git-path", "info/attributes").stdout.strip())
    attributes = attributes if attributes.is_absolute() else repo / attributes
    line = f"dvc.lock merge={MERGE_DRIVER}"
    text = attributes.read_text() if attributes.exists() else ""
    if line not in text.splitlines():
        attributes.parent.mkdir(parents=True, exist_ok=True)
        attributes.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")


def _rebase_onto_remote(repo: Path, branch: str, concept: str, push_error: str) -> None:
    """Rebases this clone's commits over what others pushed to `origin` meanwhile. dvc.lock merges stage
    by stage, so other concepts' runs never conflict with this one; a conflict left (the same concept's
    entries or files changed on both sides) or commits that changed what this concept's stages depend
    on raise LineageConflict, with the branch as it was before the rebase."""
    git(repo, "fetch", "-q", "origin", branch)
    upstream = git(repo, "rev-parse", "FETCH_HEAD").stdout.strip()
    before = git(repo, "rev-parse", "HEAD").stdout.strip()
    if git(repo, "merge-base", "--is-ancestor", upstream, before, check=False).returncode == 0:
        raise GitError(f"{repo}: `git push origin` failed, and not because {branch} moved:\n{push_error[-4000:]}")
    _select_merge_driver(repo)
    rebase = git(repo, *identity_args(repo), *_merge_driver_args(), "rebase", "--autostash", upstream, check=False)
    if rebase.returncode != 0:
        conflicted = git(repo, "diff", "--name-only", "--diff-filter=U", check=False).stdout.split()
        git(repo, "rebase", "--abort", check=False)
        raise LineageConflict(
            f"{repo}: origin/{branch} moved to {upstream[:12]} with changes that conflict with this run's "
            f"commit in {', '.join(conflicted) or 'the working tree'}:\n{(rebase.stdout + rebase.stderr)[-2000:]}\n"
            f"Nothing was registered; run {concept} again on top of the new {branch}."
        )
    changed = changed_stages(repo, concept)
    if changed:
        git(repo, "reset", "-q", "--keep", before, check=False)
        raise LineageConflict(
            f"{repo}: commits pushed to origin/{branch} meanwhile (now {upstream[:12]}) changed what "
            f"{concept}'s stages depend on ({', '.join(changed)} out of date on top of them), so this "
            f"run's adapter does not belong to the new {branch}. Nothing was registered; run {concept} again."
        )


def push_commit(repo: Path, commit: str, concept: str, attempts: int = 4) -> str | None:
    """Pushes the lineage commit (HEAD) to the branch it was made on at `origin`, so that the revision a
    model version names exists beyond this clone (a worker's clone is thrown away). If the branch moved
    meanwhile, rebases over it (see _rebase_onto_remote) and pushes again, up to ``attempts`` times.
    Returns the commit the remote now holds: ``commit`` or its rebased copy, checked against the
    remote's branch. Without an `origin` remote (a checkout of its own) there is nowhere to push:
    returns None."""
    if "origin" not in git(repo, "remote").stdout.split():
        return None
    branch = git(repo, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    if branch == "HEAD":
        raise GitError(f"{repo}: detached HEAD; check out a branch to push the lineage commit to")
    if git(repo, "rev-parse", "HEAD").stdout.strip() != commit:
        raise GitError(f"{repo}: HEAD is not the lineage commit {commit[:12]}; nothing to push")
    for _ in range(attempts):
        pushed = git(repo, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", check=False)
        if pushed.returncode == 0:
            head = git(repo, "rev-parse", "HEAD").stdout.strip()
            git(repo, "fetch", "-q", "origin", branch)  # what the remote holds now, not what we think
            if git(repo, "merge-base", "--is-ancestor", head, "FETCH_HEAD", check=False).returncode != 0:
                raise GitError(f"{repo}: origin/{branch} does not contain {head[:12]} after the push")
            return head
        _rebase_onto_remote(repo, branch, concept, pushed.stderr)
    raise GitError(f"{repo}: origin/{branch} moved again during each of {attempts} rebase-and-push attempts")


def _push_record(repo: Path, concept: str) -> Path:
    return repo / ".dvc" / "tmp" / f"conceptlab-pushed-{concept}.json"


def _pushed_state(repo: Path, concept: str, remote: str | None) -> dict:
    """What a push of the concept leaves on the remote: its outs' md5s (dvc.lock) on that remote, as the
    repository's DVC configuration names it (editing a remote's URL there makes the next push run)."""
    configs = {
        name: (repo / ".dvc" / name).read_text()
        for name in ("config", "config.local")
        if (repo / ".dvc" / name).exists()
    }
    return {"remote": remote or "(default)", "config": configs, "outs": lock_hashes(repo, concept)}


def already_pushed(repo: Path, concept: str, remote: str | None = None) -> bool:
    """Whether the last successful push of the concept from this clone sent exactly the outs that
    dvc.lock names now, to the same remote (a local record in .dvc/tmp; a fresh clone has none)."""
    record = _push_record(repo, concept)
    try:
        return json.loads(record.read_text()) == _pushed_state(repo, concept, remote)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def push(repo: Path, remote: str | None = None, concept: str | None = None) -> str:
    """`dvc push`; with ``concept``, skipped when already_pushed (nothing new to send: a no-op push
    still costs a DVC process and a look-up of every file on the remote), and recorded after success."""
    if concept and already_pushed(repo, concept, remote):
        return "already pushed"
    output = dvc(repo, "push", *(["-r", remote] if remote else []))
    if concept and (repo / "dvc.lock").exists():
        record_push(repo, concept, remote)
    return output


def record_push(repo: Path, concept: str, remote: str | None = None) -> None:
    """Notes that the concept's outs in dvc.lock are on ``remote`` now (after a successful `dvc push`)."""
    _push_record(repo, concept).parent.mkdir(parents=True, exist_ok=True)
    _push_record(repo, concept).write_text(json.dumps(_pushed_state(repo, concept, remote)))


def lock_hashes(repo: Path, concept: str) -> dict[str, str]:
    """md5 of each out of the concept's stages as recorded in dvc.lock: the data's lineage."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    hashes = {}
    for stage in STAGES:
        for out in lock["stages"].get(f"{stage}@{concept}", {}).get("outs", []):
            name = Path(out["path"]).name
            hashes[f"dvc.{stage}.{name}.md5"] = out.get("md5", "")
    return hashes
