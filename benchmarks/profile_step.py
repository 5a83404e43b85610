"""Where a training step's time goes: torch.profiler over a few steps of components.train.train, per
model family, on the toy world's images at 32 and 128 px. Prints the top operators by self CPU time
and their share of the steps' total, writes benchmarks/results/profile_step.json and a markdown table
(profile_step.md).

The step is run the way benchmarks/train_and_prior.py runs it (the public `train`, batch 2 + 2 class
images with prior preservation, the params.yaml rank and learning rate). `train` also loads the model
and caches latents; to keep only the steps, each case is profiled twice in one process, with 1 step
and with 1 + N steps, and the per-operator difference is what the N steps cost.

    uv run python -m benchmarks.profile_step          # about 3-5 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
# family -> model: the committed toy-world SD (32 px native) and the tiny builders of the other layouts
# (components/tiny_models*.py); every model is run at both sizes (the U-Nets and transformers take any
# multiple of their VAE's downsampling).
MODELS = {
    "sd": str(ROOT / "models" / "toyworld-sd"),
    "sdxl": "tiny-sdxl",
    "flux": "tiny-flux",
    "sd3": "tiny-sd3",
}


def _op_times(prof) -> dict[str, tuple[float, int]]:
    """Self CPU microseconds and call count per operator name."""
    return {e.key: (e.self_cpu_time_total, e.count) for e in prof.key_averages()}


def _profile_train(data, params, work: Path) -> tuple[dict, float]:
    from torch.profiler import ProfilerActivity, profile

    from components.train import train

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train(data, params, work / f"adapter-{time.time_ns()}", work / f"ckpt-{time.time_ns()}")
    return _op_times(prof), result.step_seconds  # median step, profiled (the profiler adds its overhead)


def _case(family: str, model: str, size: int, steps: int, work: Path, top: int) -> dict:
    from components.caption import caption
    from components.config import CaptionParams, Concept, CurateParams, PriorParams, TrainParams
    from components.curate import curate
    from components.prior import generate_priors
    from components.samples import write_sample_photos
    from components.train import load_train_data

    case_dir = work / f"{family}-{size}"
    concept = Concept(name="bench", class_noun="robot", base_model=model, photos=str(case_dir / "photos"))
    write_sample_photos(case_dir / "photos", count=4, size=max(96, size))
    curate(str(case_dir / "photos"), case_dir / "curated", CurateParams(min_side=64, min_images=3), size)
    caption(case_dir / "curated", case_dir / "captions", CaptionParams(), concept)
    prior = generate_priors(
        model, "robot", PriorParams(num_images=2, steps=2, batch_size=2), size, case_dir / "priors", case_dir / "prior"
    )
    data = load_train_data(model, size, case_dir / "curated", case_dir / "captions", case_dir / "prior")
    assert prior.images, "class images for prior preservation"

    def params(n: int) -> TrainParams:
        return TrainParams(max_steps=n, batch_size=2, checkpoint_every=10**6, with_prior_preservation=True)

    setup_ops, _ = _profile_train(data, params(1), case_dir)
    all_ops, step_seconds = _profile_train(data, params(1 + steps), case_dir)
    step_ops = {}
    for name, (us, count) in all_ops.items():
        base_us, base_count = setup_ops.get(name, (0.0, 0))
        if us - base_us > 0:
            step_ops[name] = (us - base_us, count - base_count)
    total = sum(us for us, _ in step_ops.values())
    ranked = sorted(step_ops.items(), key=lambda kv: -kv[1][0])
    return {
        "family": family,
        "model": Path(model).name,
        "px": size,
        "steps": steps,
        "s_per_step_profiled": step_seconds,
        "profiled_self_cpu_ms_per_step": total / 1e3 / steps,
        "top": [
            {"op": name, "share": us / total, "ms_per_step": us / 1e3 / steps, "calls_per_step": count / steps}
            for name, (us, count) in ranked[:top]
        ],
    }


def _markdown(rows: list[dict], machine: str) -> str:
    lines = [
        "# Where a training step's time goes",
        "",
        f"`uv run python -m benchmarks.profile_step` on {machine}: torch.profiler, self CPU time per operator",
        "over the steps only (a 1-step run subtracted from a 1+N-step run), batch 2 + 2 class images,",
        "rank 8, fp32. Share: of all profiled self CPU time in the steps.",
        "",
        "| family | model | px | s/step (profiled, median) | top operators (share of self CPU) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ops = "; ".join(f"`{t['op']}` {t['share']:.0%}" for t in r["top"][:5])
        lines.append(f"| {r['family']} | {r['model']} | {r['px']} | {r['s_per_step_profiled']:.3f} | {ops} |")
    return "\n".join(lines) + "\n"


@app.command()
def main(
    steps: int = typer.Option(3, help="steps per case beyond the first (whose cost, with the setup, is subtracted)"),
    sizes: str = typer.Option("32,128", help="pixel sizes, comma-separated"),
    families: str = typer.Option(",".join(MODELS), help="families, comma-separated"),
    top: int = typer.Option(10, help="operators kept per case"),
):
    import torch

    from components.base_model import models_dir
    from components.tiny_models import ensure_tiny_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Every family at the first size, then the next size: a cut-short run still covers each family.
        for size in (int(s) for s in sizes.split(",")):
            for family in families.split(","):
                model = MODELS[family]
                if not Path(model).is_dir():
                    ensure_tiny_model(model, models_dir())
                started = time.time()
                rows.append(_case(family, model, size, steps, Path(tmp), top))
                print(f"{family} {size} px: {time.time() - started:.0f} s", flush=True)
                _write(rows, machine)  # after each case: what is done is kept
    print(f"\n{machine}")
    for r in rows:
        print(f"\n{r['family']} ({r['model']}) {r['px']} px: {r['s_per_step_profiled']:.3f} s/step (median, profiled)")
        print(f"  {'operator':40} {'share':>6} {'ms/step':>9} {'calls':>6}")
        for t in r["top"]:
            print(f"  {t['op'][:40]:40} {t['share']:6.1%} {t['ms_per_step']:9.2f} {t['calls_per_step']:6.0f}")


def _write(rows: list[dict], machine: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_step.json").write_text(json.dumps({"machine": machine, "cases": rows}, indent=2) + "\n")
    (RESULTS / "profile_step.md").write_text(_markdown(rows, machine))


if __name__ == "__main__":
    app()
