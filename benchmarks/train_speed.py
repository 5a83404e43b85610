"""Training step speed, per speed option (train: compile, optimizer_impl, channels_last, attention, num_threads,
and the existing mixed_precision bf16), on the toy world (models/toyworld-sd, toy-orange-star, batch 2 + 2
prior) at 32 px and at 128 px. The options run interleaved in one process (baseline, option, baseline,
option, ... for each round) so a shared machine's noise hits both sides of each ratio; the ratio is
baseline s/step / option s/step per pair (median step of each run), and the table shows the median over
rounds. compile also gets its one-off cost (the extra seconds of its first steps) and the steps it needs
to pay that back. Prints a table and writes benchmarks/results/train_speed.json.

    uv run python -m benchmarks.train_speed                          # ~10 min on 2 busy cores
    uv run python -m benchmarks.train_speed --rounds 1 --sizes 32 --steps 6    # a quick look
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"
CONCEPT = "toy-orange-star"
OPTIONS = {
    "compile": {"compile": True},
    "optimizer_impl fused": {"optimizer_impl": "fused"},
    "optimizer_impl foreach": {"optimizer_impl": "foreach"},
    "channels_last": {"channels_last": True},
    "attention classic": {"attention": "classic"},
    "mixed_precision bf16": {"mixed_precision": "bf16"},
    "num_threads 1": {"num_threads": 1},
}


def _prepare(size: int, work: Path, prior_images: int):
    from components.toyworld.experiment import prepare

    overrides = {
        "resolution": size,
        "prior": {"num_images": prior_images, "steps": 10},
    }  # only their count matters here
    return prepare(CONCEPT, work / f"{size}px", overrides)


def _run(prep, steps: int, options: dict, work: Path) -> dict:
    from components.pipeline import prior_folder, resolution
    from components.train import load_train_data, train

    params = prep.cfg.params.train.model_copy(update={"max_steps": steps, "checkpoint_every": 10**6, **options})
    data = load_train_data(
        prep.cfg.concept.base_model,
        resolution(prep.cfg),
        prep.layout.curated,
        prep.layout.captions,
        prior_folder(prep.layout),
    )
    out = work / f"run-{time.time_ns()}"
    result = train(data, params, out / "adapter", out / "checkpoints")
    # one-off time in the loop beyond steps x the median step (compile's first steps, warm-up)
    return {
        "s_per_step": result.step_seconds,
        "one_off_s": result.loop_seconds - steps * result.step_seconds,
        "final_loss": result.final_loss,
    }


@app.command()
def main(
    sizes: Annotated[str, typer.Option(help="comma-separated pixel sizes")] = "32,128",
    rounds: Annotated[int, typer.Option(help="baseline/option pairs per option and size")] = 3,
    steps: Annotated[int, typer.Option(help="training steps per run")] = 12,
    options: Annotated[str, typer.Option(help="comma-separated names from OPTIONS; empty: all")] = "",
    prior_images: int = 2,
    threads: Annotated[int, typer.Option(help="the baseline's num_threads; 0: torch's own")] = 0,
    out: Path = RESULTS / "train_speed.json",
):
    import torch

    os.environ.setdefault("TQDM_DISABLE", "1")
    names = [n.strip() for n in options.split(",") if n.strip()] or list(OPTIONS)
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        raise typer.BadParameter(f"--options: {unknown}; choose from {', '.join(OPTIONS)}")
    # the baseline names its thread count, so a 1-thread run before it does not leave it at 1
    baseline = {"compile": False, "num_threads": threads or torch.get_num_threads()}
    table = []
    with tempfile.TemporaryDirectory(prefix="conceptlab-train-speed-") as tmp:
        work = Path(tmp)
        for size in [int(s) for s in sizes.split(",")]:
            prep = _prepare(size, work, prior_images)
            _run(prep, 2, baseline, work)  # warm caches and lazy imports, not counted
            for name in names:
                pairs = []
                for _ in range(rounds):
                    base = _run(prep, steps, baseline, work)
                    opt = _run(prep, steps, baseline | OPTIONS[name], work)
                    pairs.append({"baseline": base, "option": opt, "ratio": base["s_per_step"] / opt["s_per_step"]})
                    print(f"{size:4d} px {name:24} {base['s_per_step']:.4f} -> {opt['s_per_step']:.4f} s/step")
                row = {
                    "size": size,
                    "option": name,
                    "settings": OPTIONS[name],
                    "steps": steps,
                    "baseline_s_per_step": statistics.median(p["baseline"]["s_per_step"] for p in pairs),
                    "option_s_per_step": statistics.median(p["option"]["s_per_step"] for p in pairs),
                    "speedup": statistics.median(p["ratio"] for p in pairs),
                    "speedups": [round(p["ratio"], 3) for p in pairs],
                    "extra_one_off_s": statistics.median(
                        p["option"]["one_off_s"] - p["baseline"]["one_off_s"] for p in pairs
                    ),
                    "final_loss": [
                        statistics.median(p[k]["final_loss"] for p in pairs) for k in ("baseline", "option")
                    ],
                    "pairs": pairs,
                }
                saved = row["baseline_s_per_step"] - row["option_s_per_step"]
                row["break_even_steps"] = row["extra_one_off_s"] / saved if saved > 0 else None
                table.append(row)
    report = {
        "machine": f"CPU, {os.cpu_count()} cores (shared with other jobs: ratios are side by side)",
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "concept": CONCEPT,
        "batch": "2 + 2 prior",
        "baseline": baseline,
        "rows": table,
    }
    _print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


def _print(report: dict) -> None:
    print(f"\n{report['machine']}, {report['date']}, torch {report['torch']}, baseline {report['baseline']}")
    print(
        f"{'px':>4} {'option':24} {'base s/step':>11} {'opt s/step':>10} {'speedup':>8} {'per round':>22} {'one-off s':>9}"
    )
    for r in report["rows"]:
        rounds = " ".join(f"{x:.2f}" for x in r["speedups"])
        print(
            f"{r['size']:4d} {r['option']:24} {r['baseline_s_per_step']:11.4f} {r['option_s_per_step']:10.4f} "
            f"{r['speedup']:7.2f}x {rounds:>22} {r['extra_one_off_s']:9.1f}"
        )


if __name__ == "__main__":
    app()
