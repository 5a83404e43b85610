"""GPU benchmark: conceptlab's own training and class-prior code on random-weight models of the real
shapes (SD1.5 at 512 px, SDXL and FLUX.1-dev at 1024 px), built on the device from their configs (nothing shipped or
downloaded). Per model and setting (bf16; bf16 + gradient checkpointing; with ``--options`` also one
row per memory option: 8-bit AdamW, NF4 and int8 base, the frozen parts kept or freed, and the
combinations the issue's goals name): seconds per step (median of the steady steps) and peak GiB
allocated, beside `conceptlab plan`'s estimate for that setting (plan_gib, measured_gib, ratio = measured /
plan; the planner aims at 0.8-1.2); per model: class-prior images/s. Rows that need CUDA and bitsandbytes
are recorded as skipped, with the reason and the plan's estimate, where those are missing. With
``--reference`` it also
runs diffusers' own examples/dreambooth/train_dreambooth_lora*.py on the same model, images and
settings and prints the ratio. Writes benchmarks/results/gpu-<device>.json and prints a table.

    uv run python -m benchmarks.gpu                                   # on a GPU machine, ~5 min on an H100
    uv run python -m benchmarks.gpu --reference ~/src/diffusers       # + diffusers' scripts, side by side
    uv run python -m benchmarks.gpu --options                         # + a row per memory option
    uv run python -m benchmarks.gpu --smoke                           # tiny shapes on the CPU, seconds

``--reference`` takes a diffusers source checkout (outside this repository; never commit it) at the
installed diffusers' version (``git checkout v$(python -c 'import diffusers; print(diffusers.__version__)')``).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"
PROMPT = "a photo of sks robot"
# name -> train params over bf16 (reference rows: diffusers' scripts take only gradient checkpointing)
SETTINGS = {"bf16": {}, "bf16+checkpointing": {"gradient_checkpointing": True}}
OPTION_SETTINGS = {  # --options: one row per memory option, and the combinations the goals name
    "bf16+offload_none": {"offload_frozen": "none"},
    "bf16+offload_free": {"offload_frozen": "free"},
    "bf16+adamw_8bit": {"optimizer": "adamw_8bit"},
    "bf16+nf4": {"base_quantization": "nf4"},
    "bf16+int8": {"base_quantization": "int8"},
    "bf16+checkpointing+adamw_8bit": {"gradient_checkpointing": True, "optimizer": "adamw_8bit"},
    "bf16+checkpointing+nf4": {"gradient_checkpointing": True, "base_quantization": "nf4"},
    "bf16+checkpointing+int8": {"gradient_checkpointing": True, "base_quantization": "int8"},
}
# Run a reference script in this interpreter and report its peak allocated GPU memory at exit.
_REFERENCE_WRAPPER = (
    "import atexit, runpy, sys, torch\n"
    "atexit.register(lambda: print('PEAK_BYTES', torch.cuda.max_memory_allocated() if torch.cuda.is_available() else -1))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _models(smoke: bool) -> dict:
    """name -> (build(out_dir, device) -> model folder, resolution, reference script)."""
    import torch

    from benchmarks.shaped import SHAPED, build_shaped
    from components.base_model import models_dir
    from components.tiny_models import TINY_RESOLUTION, ensure_tiny_model

    if smoke:  # the tiny models of the same families (built once, cached like any built-in model)
        tiny = {"sd15": "tiny-sd", "sdxl": "tiny-sdxl", "flux-dev": "tiny-flux"}
        return {
            k: (lambda out, device, t=t: ensure_tiny_model(t, models_dir()), TINY_RESOLUTION, SHAPED[k][2])
            for k, t in tiny.items()
        }
    # bf16 on disk: half the bytes to write and read back; training upcasts the LoRA weights anyway.
    return {
        k: (lambda out, device, k=k: build_shaped(k, out, device, torch.bfloat16), res, script)
        for k, (_, res, script) in SHAPED.items()
    }


def _device() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", f"CPU ({os.cpu_count()} cores)"


def _reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _prepare_images(work: Path, resolution: int) -> tuple[Path, Path]:
    """The sample concept's photos, curated and captioned at the model's resolution."""
    from components.caption import caption
    from components.config import CaptionParams, Concept, CurateParams
    from components.curate import curate
    from components.samples import write_sample_photos

    write_sample_photos(work / "photos", count=6, size=max(96, resolution))
    curate(str(work / "photos"), work / "curated", CurateParams(min_side=64), resolution)
    concept = Concept(name="bench", class_noun="robot", photos=str(work / "photos"))
    caption(work / "curated", work / "captions", CaptionParams(), concept)
    return work / "curated", work / "captions"


def _unavailable(options: dict) -> str | None:
    """Why this machine cannot run a setting (train's own check), or None."""
    import torch

    from components.config import ConfigError, TrainParams
    from components.train_memory import check_memory_options

    try:
        check_memory_options(TrainParams(**options), torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    except ConfigError as exc:
        return str(exc)
    return None


def _ours(
    folder: Path, resolution: int, curated: Path, captions: Path, work: Path, steps: int, rank: int, options: dict
):
    from components.config import TrainParams
    from components.train import load_train_data, train

    data = load_train_data(str(folder), resolution, curated, captions, None)
    params = TrainParams(
        max_steps=steps,
        rank=rank,
        alpha=float(rank),  # as the reference script (alpha = rank)
        learning_rate=1e-4,
        mixed_precision="bf16",
        with_prior_preservation=False,
        checkpoint_every=10**6,
        **options,
    )
    _reset_peak()
    result = train(data, params, work / "adapter", work / "checkpoints")
    return {"s_per_step": result.step_seconds, "peak_gib": _peak_gib(), "seconds": result.seconds}, params


def _trace(folder: Path, resolution: int, rank: int):
    """The planner's meta-device trace of this model's LoRA step (batch 1, no prior preservation)."""
    from components.plan_shapes import meta_model_from_folder
    from components.plan_trace import trace_step

    return trace_step(meta_model_from_folder(folder), resolution, 1, rank)


def _planned(trace, options: dict, device_name: str) -> dict:
    """The plan's estimate for a setting this machine cannot run (measured_gib and ratio stay None)."""
    from components.config import TrainParams

    return _versus_plan(trace, TrainParams(mixed_precision="bf16", **options), {}, device_name)


def _versus_plan(trace, params, measured: dict, device_name: str) -> dict:
    """`conceptlab plan`'s estimate for the setting that ran, beside what it measured (ratio: measured/plan)."""
    from components.plan import GPU_PEAK_TFLOPS, estimate, setting_of

    gpu = next((k for k in GPU_PEAK_TFLOPS if k in device_name.lower().replace(" ", "")), "h100")
    plan = estimate(trace, setting_of(params), gpu)
    ratio = measured["peak_gib"] / plan.peak_gib if measured.get("peak_gib") else None
    return {
        "plan_gib": plan.peak_gib,
        "measured_gib": measured.get("peak_gib"),
        "ratio": ratio,
        "plan_s_per_step": plan.s_per_step,
        "plan_gpu": gpu,
    }


_TQDM = re.compile(r"Steps:[^\r\n]*?(\d+)/(\d+) \[([\d:]+)<[^,\]]*,\s*([\d.]+)(it/s|s/it)")


def _reference(
    diffusers_src: Path, script: str, folder: Path, resolution: int, curated: Path, work: Path, steps, rank, ckpt
):
    path = diffusers_src / "examples" / "dreambooth" / script
    if not path.is_file():
        raise SystemExit(f"--reference: {path} not found; pass the root of a diffusers source checkout")
    args = [
        f"--pretrained_model_name_or_path={folder}",
        f"--instance_data_dir={curated / 'images'}",
        f"--instance_prompt={PROMPT}",
        f"--output_dir={work / 'reference'}",
        f"--resolution={resolution}",
        "--train_batch_size=1",
        f"--max_train_steps={steps}",
        "--learning_rate=1e-4",
        "--lr_scheduler=constant",
        "--lr_warmup_steps=0",
        f"--rank={rank}",
        "--mixed_precision=bf16",
        "--seed=0",
        f"--checkpointing_steps={10**6}",
        "--report_to=tensorboard",  # its default; skipped by accelerate when tensorboard is not installed
    ] + (["--gradient_checkpointing"] if ckpt else [])
    proc, seconds, s_per_step = run_reference(path, args)
    peak = next((int(ln.split()[1]) for ln in proc.stdout.splitlines() if ln.startswith("PEAK_BYTES")), -1)
    return {"s_per_step": s_per_step, "peak_gib": peak / 2**30 if peak >= 0 else None, "seconds": seconds}


def run_reference(script: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Runs diffusers' training script in this interpreter: its process, wall seconds, and s/step (tqdm's
    smoothed rate at the last step)."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"} | {"HF_HUB_OFFLINE": "1"}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE_WRAPPER, str(script), *args], capture_output=True, text=True, env=env
    )
    seconds = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"reference {script.name} failed:\n{proc.stderr[-4000:]}")
    found = _TQDM.findall(proc.stderr)
    if not found:
        raise SystemExit(f"reference {script.name}: no tqdm progress line in its output:\n{proc.stderr[-2000:]}")
    rate, unit = float(found[-1][3]), found[-1][4]
    return proc, seconds, 1 / rate if unit == "it/s" else rate


def _priors(folder: Path, resolution: int, work: Path, images: int, batch: int, steps: int):
    from components.config import PriorParams
    from components.prior import generate_priors

    _reset_peak()
    started = time.time()
    params = PriorParams(num_images=images, batch_size=batch, steps=steps)
    generate_priors(str(folder), "robot", params, resolution, work / "priors", work / "prior-view")
    seconds = time.time() - started
    return {"images": images, "batch": batch, "steps": steps, "images_per_s": images / seconds, "peak_gib": _peak_gib()}


@app.command()
def main(
    models: Annotated[
        str, typer.Option(help="comma-separated, from benchmarks/shaped.py SHAPED")
    ] = "sd15,sdxl,flux-dev",
    steps: Annotated[int, typer.Option(help="training steps per setting (30-50)")] = 40,
    rank: int = 16,
    prior_images: int = 8,
    prior_batch: int = 4,
    prior_steps: int = 25,
    reference: Annotated[
        Path | None, typer.Option(help="a diffusers source checkout: also run its DreamBooth scripts")
    ] = None,
    smoke: Annotated[bool, typer.Option(help="tiny models, a few steps, on whatever device (the CPU test)")] = False,
    options: Annotated[bool, typer.Option(help="also a row per memory option (OPTION_SETTINGS)")] = False,
    out: Annotated[Path, typer.Option(help="folder for gpu-<device>.json")] = RESULTS,
):
    from components.io import slugify

    if smoke:
        steps, prior_images, prior_batch, prior_steps = min(steps, 3), 2, 2, 2
    device, device_name = _device()
    available = _models(smoke)
    rows, priors, timings = [], {}, {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="conceptlab-gpu-") as tmp:
        for name in models.split(","):
            if name not in available:
                raise typer.BadParameter(f"--models: {name!r}; choose from {', '.join(available)}")
            build, resolution, script = available[name]
            work = Path(tmp) / name
            t = time.time()
            folder = build(work / "model", device)
            timings[f"{name} build"] = time.time() - t
            curated, captions = _prepare_images(work, resolution)
            t = time.time()
            trace = _trace(folder, resolution, rank)
            timings[f"{name} plan"] = time.time() - t
            for setting, train_options in (SETTINGS | (OPTION_SETTINGS if options else {})).items():
                t = time.time()
                row = {"model": name, "resolution": resolution, "setting": setting, "rank": rank, "steps": steps}
                row["options"] = train_options
                skipped = _unavailable(train_options)
                if skipped:
                    rows.append(row | {"skipped": skipped} | _planned(trace, train_options, device_name))
                    continue
                row["ours"], params = _ours(
                    folder, resolution, curated, captions, work / setting, steps, rank, train_options
                )
                row |= _versus_plan(trace, params, row["ours"], device_name)
                ckpt = train_options.get("gradient_checkpointing", False)
                if reference is not None and setting in SETTINGS:
                    row["reference"] = _reference(
                        reference, script, folder, resolution, curated, work / setting, steps, rank, ckpt
                    )
                    row["speedup"] = row["reference"]["s_per_step"] / row["ours"]["s_per_step"]
                rows.append(row)
                timings[f"{name} {setting}"] = time.time() - t
            t = time.time()
            priors[name] = _priors(folder, resolution, work, prior_images, prior_batch, prior_steps)
            timings[f"{name} priors"] = time.time() - t
    report = _report(device_name, rows, priors, timings, time.time() - started, smoke)
    _print_table(report)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-{slugify(device_name if device == 'cuda' else 'cpu')}{'-smoke' if smoke else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def _report(device_name, rows, priors, timings, seconds, smoke) -> dict:
    import diffusers
    import torch

    return {
        "device": device_name,
        "date": datetime.date.today().isoformat(),
        "smoke": smoke,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "rows": rows,
        "priors": priors,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(seconds, 1),
    }


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _print_table(report: dict) -> None:
    print(f"\n{report['device']}, {report['date']}, torch {report['torch']}, diffusers {report['diffusers']}")
    print(
        f"{'model':6} {'px':>5} {'setting':30} {'s/step':>8} {'GiB':>6} {'ref s/step':>10} {'ref GiB':>8} {'speedup':>8}"
        f" {'plan GiB':>8} {'ratio':>6} {'plan s':>7}"
    )
    for r in report["rows"]:
        if "skipped" in r:
            print(
                f"{r['model']:6} {r['resolution']:5d} {r['setting']:30} plan {_fmt(r['plan_gib'], '.2f')} GiB, skipped: {r['skipped']}"
            )
            continue
        ref = r.get("reference", {})
        print(
            f"{r['model']:6} {r['resolution']:5d} {r['setting']:30} {_fmt(r['ours']['s_per_step'], '8.4f')} "
            f"{_fmt(r['ours']['peak_gib'], '6.2f')} {_fmt(ref.get('s_per_step'), '10.4f')} "
            f"{_fmt(ref.get('peak_gib'), '8.2f')} {_fmt(r.get('speedup'), '7.2f')}{'x' if 'speedup' in r else ' '}"
            f" {_fmt(r['plan_gib'], '8.2f')} {_fmt(r['ratio'], '6.2f')} {_fmt(r['plan_s_per_step'], '7.3f')}"
        )
    for name, p in report["priors"].items():
        print(
            f"{name:6} class priors: {p['images_per_s']:.2f} images/s "
            f"({p['images']} images, batch {p['batch']}, {p['steps']} steps)"
        )
    print(f"total {report['total_s']:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["timings_s"].items()))


if __name__ == "__main__":
    app()
