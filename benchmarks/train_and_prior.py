"""Training and class-prior throughput, side by side in one run, each variant in its own process
(so peak memory is that variant's own). Prints a table and writes a JSON file.

    uv run python -m benchmarks.train_and_prior                       # tiny-sd on this machine
    uv run python -m benchmarks.train_and_prior --model sd15-shaped --steps 50 --mixed-precision bf16   # on a GPU
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"


def _model_ref(model: str) -> str:
    if model == "sd15-shaped":
        from benchmarks.shaped import build_sd15_shaped
        from components.base_model import models_dir

        return str(build_sd15_shaped(models_dir() / "sd15-shaped"))
    return model


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _variant(
    kind: str, model: str, work: Path, steps: int, images: int, batch: int, precision: str, checkpointing: bool
):
    """Runs one measurement in this process and returns its row."""
    from components.base_model import native_resolution, resolve_model
    from components.caption import caption
    from components.config import CaptionParams, Concept, CurateParams, PriorParams, TrainParams
    from components.curate import curate
    from components.prior import generate_priors
    from components.samples import write_sample_photos
    from components.train import load_train_data, train

    ref = _model_ref(model)
    res = native_resolution(resolve_model(ref))
    concept = Concept(name="bench", class_noun="robot", base_model=ref, photos=str(work / "photos"))
    if kind == "prior":
        started = time.time()
        generate_priors(
            ref,
            "robot",
            PriorParams(num_images=images, batch_size=batch, steps=25),
            res,
            work / f"priors-{time.time_ns()}",
            work / "prior-view",
        )
        seconds = time.time() - started
        return {
            "variant": f"prior x{images} (batch {batch}, 25 steps)",
            "images_per_s": images / seconds,
            "seconds": seconds,
            "peak_mb": _peak_memory_mb(),
        }
    write_sample_photos(work / "photos", count=6, size=max(96, res))
    curate(str(work / "photos"), work / "curated", CurateParams(min_side=64), res)
    caption(work / "curated", work / "captions", CaptionParams(), concept)
    data = load_train_data(ref, res, work / "curated", work / "captions", None)
    params = TrainParams(
        max_steps=steps,
        batch_size=1,
        mixed_precision=precision,
        gradient_checkpointing=checkpointing,
        with_prior_preservation=False,
        checkpoint_every=10**6,
    )
    result = train(data, params, work / "adapter", work / "checkpoints")
    label = f"train {steps} steps, {precision}, checkpointing {'on' if checkpointing else 'off'}"
    return {
        "variant": label,
        "s_per_step": result.loop_seconds / steps,
        "seconds": result.seconds,
        "peak_mb": _peak_memory_mb(),
    }


@app.command()
def main(
    model: str = "tiny-sd",
    steps: int = 50,
    images: int = 16,
    batch: int = 8,
    mixed_precision: str = "no",
    one: str = typer.Option("", hidden=True, help="internal: run one variant and print its JSON"),
):
    import tempfile

    if one:
        kind, checkpointing = one.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            row = _variant(kind, model, Path(tmp), steps, images, batch, mixed_precision, checkpointing == "1")
        print("RESULT " + json.dumps(row))
        return
    rows = []
    for variant in ("prior:0", "train:0", "train:1"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.train_and_prior",
                "--model",
                model,
                "--steps",
                str(steps),
                "--images",
                str(images),
                "--batch",
                str(batch),
                "--mixed-precision",
                mixed_precision,
                "--one",
                variant,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"},
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(line.removeprefix("RESULT ")))
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    base = next(r for r in rows if r["variant"].endswith("checkpointing off"))["s_per_step"]
    print(f"\n{model} on {device}")
    print(f"{'variant':58} {'s/step':>8} {'img/s':>7} {'peak MB':>9} {'vs off':>7}")
    for r in rows:
        ratio = f"{r['s_per_step'] / base:.2f}x" if "s_per_step" in r else ""
        print(
            f"{r['variant']:58} {r.get('s_per_step', float('nan')):8.4f} {r.get('images_per_s', float('nan')):7.2f} "
            f"{r['peak_mb']:9.0f} {ratio:>7}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"train_and_prior-{model}-{'cuda' if torch.cuda.is_available() else 'cpu'}.json"
    out.write_text(
        json.dumps(
            {
                "model": model,
                "device": device,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    app()
