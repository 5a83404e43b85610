"""Where the demo's time goes: `conceptlab demo` twice (first run, then nothing changed) on a temporary
git copy of this working tree, with an empty HOME and PREFECT_HOME (so a fresh Prefect database and DVC
remote), and $CONCEPTLAB_TIMINGS set, so the flows (flows/timing.py) and every `conceptlab` stage
process (components/cli.py) write how long each part took. Prints one table per part and run, and
stores it under ``--label`` in benchmarks/results/orchestration.json (labels already there are kept,
so a "before" and an "after" run print side by side).

    uv run python -m benchmarks.orchestration --label after                      # the demo as it is
    uv run python -m benchmarks.orchestration --label before --rev a4c664c --fast   # small stage work
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

from components.samples import FAST_FLOW_PARAMS

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "orchestration.json"
STAGES = ("curate", "caption", "prior", "train", "evaluate")
# Spans the flows record (flows/timing.py), in the order they happen.
FLOW_PARTS = (
    "dvc.status",
    "prefect.server_start",
    "dvc.repro",
    "dvc.push",
    "git.commit",
    "mlflow.register",
    "prefect.artifacts",
    "gate",
)


def _copy_project(dest: Path, rev: str | None, fast: bool) -> Path:
    """The project at git revision ``rev`` (default: this working tree's files, tracked and untracked,
    not ignored) as a fresh one-commit git repo; with ``fast``, its params.yaml takes FAST_FLOW_PARAMS (the
    e2e demo test's settings: the stage work small, the orchestration most of the run)."""
    dest.mkdir(parents=True)
    if rev:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    if fast:
        import yaml

        from components.config import deep_merge

        params = deep_merge(yaml.safe_load((dest / "params.yaml").read_text()), FAST_FLOW_PARAMS)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "bench@conceptlab.invalid"],
        ["git", "config", "user.name", "bench"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "project"],
    ):
        subprocess.run(args, cwd=dest, check=True, capture_output=True)
    return dest


def _import_seconds(module: str) -> float:
    """Wall time of `import module` in a fresh interpreter (what a new process pays for it)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def _run_demo(repo: Path, env: dict[str, str], timings: Path, concept: str | None) -> dict:
    timings.unlink(missing_ok=True)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.cli",
            "demo",
            "--repo",
            str(repo),
            *(["--concept", concept] if concept else []),
        ],
        cwd=repo,
        env={**env, "CONCEPTLAB_TIMINGS": str(timings)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the demo and every process it waited for (stages, DVC, Prefect's server): on a
    # shared machine a steadier figure than wall time, which grows with everyone else's load.
    cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    if proc.returncode != 0:
        raise SystemExit(f"the demo failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    flows = re.search(r"flows took ([\d.]+) s", proc.stderr)
    ran = re.search(r"DVC ran: ([^;]*);", proc.stderr)
    lines = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
    return _parts(wall, cpu, float(flows.group(1)) if flows else float("nan"), lines, ran.group(1) if ran else "?")


def _parts(wall: float, cpu: float, flows: float, lines: list[dict], ran: str) -> dict:
    total = {}
    for line in lines:
        total[line["part"]] = total.get(line["part"], 0.0) + line["seconds"]
    stage_lines = [line for line in lines if line["part"].removeprefix("cli.") in STAGES]
    demo_line = next((line for line in lines if line["part"] == "cli.demo"), {})
    work = sum(line["seconds"] for line in stage_lines)
    startup = sum(line["startup"] for line in stage_lines)
    repro = total.get("dvc.repro", 0.0)
    parts = {
        "demo process (wall)": wall,
        "  CPU time, all of its processes (user + system)": cpu,
        "  CLI start-up (interpreter + imports)": demo_line.get("startup", float("nan")),
        "  flows' modules import (Prefect, ...)": total.get("import.flows", 0.0),
        "  DVC remote look-up": total.get("dvc.remote", 0.0),
        "flows (the demo's 'flows took')": flows,
        "  nothing-changed check (dvc status + registry)": total.get("dvc.status", 0.0),
        "  Prefect temporary server start": total.get("prefect.server_start", 0.0),
        "  dvc repro (all of it)": repro,
        "    stage work (command bodies, torch imports included)": work,
        "    stage processes' start-up (interpreter + CLI imports)": startup,
        "    DVC itself (hashing, status, lock, spawning)": repro - work - startup if repro else 0.0,
        "  dvc push": total.get("dvc.push", 0.0),
        "  git commit": total.get("git.commit", 0.0),
        "  MLflow registration (import included)": total.get("mlflow.register", 0.0),
        "  Prefect artifacts": total.get("prefect.artifacts", 0.0),
        "  promotion gate": total.get("gate", 0.0),
    }
    # The rest of the wall time: Prefect's flow and task runs, logging, waiting on locks, exiting.
    measured = sum(total.get(p, 0.0) for p in (*FLOW_PARTS, "import.flows", "dvc.remote"))
    parts["Prefect flow/task runs and the rest (wall - start-up - the parts above)"] = (
        wall - demo_line.get("startup", 0.0) - measured
    )
    parts["orchestration overhead (flows - stage work)"] = flows - work
    return {"ran": ran, "seconds": {k: round(v, 2) for k, v in parts.items()}}


def _print_table(results: dict) -> None:
    columns = [(label, run) for label, entry in results.items() if "runs" in entry for run in ("first", "no-op")]
    if not columns:
        return
    parts = next(iter(results.values()))["runs"]["first"]["seconds"].keys()
    header = f"{'part (seconds)':58}" + "".join(f"{label + ' ' + run:>15}" for label, run in columns)
    print(header)
    print("-" * len(header))
    for part in parts:
        row = f"{part:58}"
        for label, run in columns:
            value = results[label]["runs"][run]["seconds"].get(part)
            row += f"{'' if value is None else f'{value:.1f}':>15}"
        print(row)
    print()
    for label, entry in results.items():
        imports = ", ".join(f"{k} {v:.1f} s" for k, v in entry.get("imports", {}).items())
        print(f"{label}: {entry.get('machine', '')}; fresh-process imports: {imports}")


@app.command()
def main(
    label: str = typer.Option("after", help="key in the results file (e.g. before, after)"),
    keep: bool = typer.Option(False, help="keep the temporary copy (its path is printed)"),
    rev: str = typer.Option("", help="measure this git revision (default: the working tree)"),
    fast: bool = typer.Option(False, help="the e2e test's small settings (tiny-sd sample, 8 steps)"),
):
    from components.base_model import models_dir

    tmp = Path(tempfile.mkdtemp(prefix="conceptlab-orchestration-"))
    repo = _copy_project(tmp / "repo", rev or None, fast)
    (tmp / "home").mkdir()
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "PREFECT_HOME": str(tmp / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "CONCEPTLAB_MODELS_DIR": str(models_dir()),  # the built tiny models, not a rebuild under the new HOME
    }
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_PROFILE"):
        env.pop(var, None)
    try:
        concept = FAST_FLOW_PARAMS["concepts"][0] if fast else None
        runs = {
            "first": _run_demo(repo, env, tmp / "t1.jsonl", concept),
            "no-op": _run_demo(repo, env, tmp / "t2.jsonl", concept),
        }
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    imports = {m: round(_import_seconds(m), 2) for m in ("components.cli", "torch", "diffusers", "prefect", "mlflow")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[label] = {
        "code": rev or "working tree",
        "settings": "fast (components/samples.py FAST_FLOW_PARAMS)" if fast else "params.yaml (the demo)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average {load:.1f} at the end)",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": runs,
        "imports": imports,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results)


if __name__ == "__main__":
    app()
