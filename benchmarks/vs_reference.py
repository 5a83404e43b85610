"""conceptlab's training against diffusers' examples/dreambooth/train_dreambooth_lora.py, side by side in one
run, on the CPU: the toy world (models/toyworld-sd, toy-orange-star) at each size, the same curated images,
the same class-prior images, batch 2 + 2 prior, rank 8 with alpha = rank (the reference's), learning rate,
constant schedule, seed and steps. Each trainer runs in its own process, one after the other, so the
whole-process wall includes imports and loading. Both adapters then go through the same evaluate stage
(same prompts, seeds and CLIP), so speed is not bought with quality. Prints a table and writes
benchmarks/results/vs_reference.json.

    uv run python -m benchmarks.vs_reference --reference ~/src/diffusers            # 32 and 128 px
    uv run python -m benchmarks.vs_reference --reference ~/src/diffusers --sizes 32 --steps 100

``--reference`` is a diffusers source checkout (outside this repository; never commit it) at the installed
diffusers' version; only examples/dreambooth/train_dreambooth_lora.py is read from it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.gpu import run_reference

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"
CONCEPT = "toy-orange-star"
RANK = 8


def _overrides(size: int, steps: int, prior_images: int, options: dict, prior_steps: int = 25) -> dict:
    train = {"max_steps": steps, "rank": RANK, "alpha": float(RANK), "batch_size": 2, "checkpoint_every": 10**6}
    return {"resolution": size, "prior": {"num_images": prior_images, "steps": prior_steps}, "train": train | options}


def _ours_in_process(work: Path, size: int, steps: int, prior_images: int, options: dict) -> None:
    """The prepared concept read back (curate, caption and prior ran in the parent), then one training run."""
    from components.config import load_config
    from components.layout import ConceptLayout
    from components.toyworld.experiment import REPO, Prepared, train_variant
    from components.toyworld.tasks import CONCEPT_TASKS

    cfg = load_config(REPO / "concepts" / CONCEPT / "concept.yaml", work / "params.yaml")
    task = next(t for t in CONCEPT_TASKS if t.name == CONCEPT)
    adapter = train_variant(Prepared(cfg, ConceptLayout(work / "work", CONCEPT), task), "ours")
    print("RESULT " + (adapter / "train.json").read_text().replace("\n", " "))


def _ours(work: Path, size: int, steps: int, prior_images: int, options: dict) -> dict:
    started = time.time()
    cmd = [sys.executable, "-m", "benchmarks.vs_reference", "--one", json.dumps([str(work), size, steps, prior_images])]
    proc = subprocess.run(cmd + ["--options", json.dumps(options)], capture_output=True, text=True)
    wall = time.time() - started
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"ours failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    return {"s_per_step": result["step_seconds"], "process_s": wall, "final_loss": result["final_loss"]}


def _reference(script: Path, prep, size: int, steps: int, prior_images: int) -> dict:
    from components.io import read_json
    from components.pipeline import prior_folder

    prior = prior_folder(prep.layout)
    out = prep.layout.root / "variants" / "reference" / "adapter"
    args = [
        f"--pretrained_model_name_or_path={_model_folder(prep)}",
        f"--instance_data_dir={prep.layout.curated / 'images'}",
        f"--instance_prompt=a photo of {prep.cfg.concept.instance_token} {prep.cfg.concept.class_noun}",
        "--with_prior_preservation",
        f"--class_data_dir={prior / 'images'}",
        f"--class_prompt={read_json(prior / 'manifest.json')['prompt']}",
        f"--num_class_images={prior_images}",
        "--prior_loss_weight=1.0",
        f"--output_dir={out}",
        f"--resolution={size}",
        "--train_batch_size=2",
        f"--max_train_steps={steps}",
        f"--learning_rate={prep.cfg.params.train.learning_rate}",
        "--lr_scheduler=constant",
        "--lr_warmup_steps=0",
        f"--rank={RANK}",
        "--mixed_precision=no",
        "--seed=0",
        f"--checkpointing_steps={10**6}",
        "--report_to=tensorboard",  # its default; skipped by accelerate when tensorboard is not installed
    ]
    proc, wall, s_per_step = run_reference(script, args)
    losses = [float(x) for x in re.findall(r"loss=([\d.]+)", proc.stderr)]
    return {
        "s_per_step": s_per_step,
        "process_s": wall,
        "final_loss": losses[-1] if losses else None,
        "adapter": str(out),
    }


def _model_folder(prep) -> str:
    from components.base_model import resolve_model

    return str(resolve_model(prep.cfg.concept.base_model))


def _clip(prep, adapter: Path) -> dict:
    from components.toyworld.experiment import evaluate_variant

    metrics = evaluate_variant(prep, adapter).metrics
    return {k: metrics[k] for k in ("clip_i", "clip_t") if k in metrics}


@app.command()
def main(
    reference: Annotated[Path | None, typer.Option(help="a diffusers source checkout")] = None,
    sizes: Annotated[str, typer.Option(help="comma-separated pixel sizes")] = "32,128",
    steps: int = 100,
    prior_images: int = 8,
    prior_steps: int = 25,
    options: Annotated[str, typer.Option(help="JSON: extra train params for ours")] = "{}",
    evaluate: bool = True,
    one: Annotated[str, typer.Option(hidden=True, help="internal: train ours in this process")] = "",
    out: Path = RESULTS / "vs_reference.json",
):
    extra = json.loads(options)
    if one:
        work, size, n, priors = json.loads(one)
        _ours_in_process(Path(work), size, n, priors, extra)
        return
    if reference is None:
        raise typer.BadParameter("--reference: pass the root of a diffusers source checkout")
    script = reference / "examples" / "dreambooth" / "train_dreambooth_lora.py"
    if not script.is_file():
        raise typer.BadParameter(f"--reference: {script} not found; pass the root of a diffusers source checkout")
    import torch

    from components.toyworld.experiment import prepare

    rows = []
    with tempfile.TemporaryDirectory(prefix="conceptlab-vs-reference-") as tmp:
        for size in [int(s) for s in sizes.split(",")]:
            work = Path(tmp) / f"{size}px"
            prep = prepare(CONCEPT, work, _overrides(size, steps, prior_images, extra, prior_steps))
            ours = _ours(work, size, steps, prior_images, extra)
            ref = _reference(script, prep, size, steps, prior_images)
            row = {"size": size, "steps": steps, "ours_options": extra, "ours": ours, "reference": ref}
            row["step_speedup"] = ref["s_per_step"] / ours["s_per_step"]
            row["process_speedup"] = ref["process_s"] / ours["process_s"]
            if evaluate:
                ours["clip"] = _clip(prep, prep.layout.root / "variants" / "ours" / "adapter")
                ref["clip"] = _clip(prep, Path(ref["adapter"]))
            ref.pop("adapter")  # a temporary folder
            rows.append(row)
            print(json.dumps(row))
    import diffusers

    report = {
        "machine": f"CPU, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; both trainers ran back "
        f"to back in one run; load average {os.getloadavg()[0]:.1f} at the end",
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "concept": CONCEPT,
        "batch": "2 + 2 prior",
        "rank": RANK,
        "rows": rows,
    }
    print(f"\n{report['machine']}, {report['date']}")
    print(
        f"{'px':>4} {'ours s/step':>11} {'ref s/step':>10} {'speedup':>8} {'ours proc s':>11} {'ref proc s':>10} {'speedup':>8}"
        f" {'loss ours/ref':>14} {'CLIP-I ours/ref':>16}"
    )
    for r in rows:
        o, f = r["ours"], r["reference"]
        clip = (
            f"{o.get('clip', {}).get('clip_i', float('nan')):.3f}/{f.get('clip', {}).get('clip_i', float('nan')):.3f}"
        )
        print(
            f"{r['size']:4d} {o['s_per_step']:11.4f} {f['s_per_step']:10.4f} {r['step_speedup']:7.2f}x "
            f"{o['process_s']:11.1f} {f['process_s']:10.1f} {r['process_speedup']:7.2f}x "
            f"{o['final_loss']:.3f}/{f['final_loss'] or float('nan'):.3f} {clip:>16}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    app()
