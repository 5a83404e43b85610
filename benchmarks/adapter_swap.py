"""What LoRA promises for serving, measured on the toy world: adapters swap on a loaded base far faster
than loading the base again, a fused adapter costs what the base costs per image, and fused pictures
equal unfused ones within rounding. Prints a table and writes benchmarks/results/adapter_swap.json.

    uv run python -m benchmarks.adapter_swap                  # toyworld-sd, two concepts trained briefly
    uv run python -m benchmarks.adapter_swap --adapters work/toy-purple-triangle/adapter --adapters DIR

Everything goes through components.generate (the code `conceptlab generate` and the web app run).
Timings are medians over --repeats; the first call of each kind is a warm-up and not counted.
"""

from __future__ import annotations

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
ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ("toy-purple-triangle", "toy-white-diamond")
# Fused vs unfused: the same weights summed in another order ((W + s·BA)x vs Wx + s·B(Ax)), so float32
# results differ in the last bits; 25 denoising steps carry that into the latents, and 8-bit output can
# flip a rounding by one level where a value sits near a boundary. A wrong merge (weight, scale, missing
# adapter) moves pixels by tens of levels: the adapter-vs-base difference below shows that scale.
TOLERANCE_LEVELS = 2


def _train_adapters(work: Path, steps: int) -> list[Path]:
    """Each toy-world concept trained briefly (no prior images: this measures serving, not quality)."""
    from components.config import load_config
    from components.layout import ConceptLayout
    from components.pipeline import run_caption, run_curate, run_train

    folders = []
    for name in CONCEPTS:
        cfg = load_config(ROOT / "concepts" / name / "concept.yaml", ROOT / "params.yaml")
        train = cfg.params.train.model_copy(update={"max_steps": steps, "with_prior_preservation": False})
        cfg = cfg.model_copy(update={"params": cfg.params.model_copy(update={"train": train})})
        layout = ConceptLayout(work, name)
        for stage in (run_curate, run_caption, run_train):
            stage(cfg, layout)
        folders.append(layout.adapter)
    return folders


def _median(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _max_diff(x, y) -> int:
    import numpy as np

    return int(
        max(
            np.abs(np.asarray(a.image, dtype=np.int16) - np.asarray(b.image, dtype=np.int16)).max()
            for a, b in zip(x.images, y.images, strict=True)
        )
    )


@app.command()
def main(
    adapters: Annotated[list[Path] | None, typer.Option(help="adapter folders (default: train two concepts)")] = None,
    train_steps: int = 60,
    steps: Annotated[int, typer.Option(help="denoising steps per image")] = 25,
    images: Annotated[int, typer.Option(help="images per generation timing (one prompt, seeds 0..N-1)")] = 4,
    repeats: int = 5,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    out: Path = RESULTS / "adapter_swap.json",
):
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from diffusers.utils import logging as diffusers_logging

    from components.families import family_for
    from components.generate import _activate, generate, load_base, resolve_adapter

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folders = adapters or _train_adapters(Path(tmp) / "work", train_steps)
        resolved = [resolve_adapter(str(f), cache_dir=Path(tmp) / "cache") for f in folders]
        a, b = resolved[0], resolved[1 % len(resolved)]
        base = a.base_model
        family = family_for(base.path)
        prompt = "a photo of a sks " + ("triangle" if "triangle" in a.name else "shape")
        seeds = list(range(images))

        def fresh_base():
            return family.load_pipeline(base.path, torch.float32, "cpu" if not torch.cuda.is_available() else "cuda")

        def fresh_base_with_adapter():
            pipe = fresh_base()
            pipe.load_lora_weights(str(a.adapter_dir))

        rows: dict[str, float] = {}
        rows["load base (from disk)"] = _median(fresh_base, repeats)
        rows["load base + adapter (the alternative to a swap)"] = _median(fresh_base_with_adapter, repeats)

        pipe = load_base(base)
        started = time.perf_counter()
        _activate(pipe, [(a, 1.0)])
        _activate(pipe, [(b, 1.0)])
        rows["first load of two adapters into the loaded base"] = time.perf_counter() - started
        flip = [0]

        def swap():
            flip[0] ^= 1
            _activate(pipe, [((a, b)[flip[0]], 1.0)])

        rows["swap the active adapter (set_adapters)"] = _median(swap, repeats)

        plain = fresh_base()  # no LoRA layers at all: the true base cost
        merged = fresh_base()  # one concept merged for good and its LoRA layers removed (a one-concept server)
        merged.load_lora_weights(str(a.adapter_dir))
        merged.fuse_lora(components=[c for c in merged._lora_loadable_modules if getattr(merged, c, None)])
        merged.unload_lora_weights()
        for p in (plain, merged):
            p._conceptlab = {"loaded": {}, "scheduler": p.scheduler, "base": base, "dtype": "float32"}
        both = [(a, 0.8), (b, 0.6)] if b is not a else [(a, 0.8)]
        variants = {
            "base alone (no LoRA layers)": (plain, [], False),
            "one adapter, unfused": (pipe, [(a, 1.0)], False),
            "one adapter, fused": (pipe, [(a, 1.0)], True),
            "one adapter, fused, LoRA layers removed": (merged, [], False),
            "two adapters (0.8 + 0.6), unfused": (pipe, both, False),
            "two adapters (0.8 + 0.6), fused": (pipe, both, True),
        }
        # Round robin, so a change in the machine's load over the run hits every variant alike; the first
        # round is a warm-up. Drawing time only: switching and fusing are timed apart.
        draws = {k: [] for k in variants}
        outputs = {}
        for round_ in range(repeats + 1):
            for label, (on, adapter_list, fuse) in variants.items():
                r = generate(on, adapter_list, [prompt], seeds, steps=steps, guidance=5.0, fuse=fuse)
                outputs[label] = r
                if round_:
                    draws[label].append(r.timings["draw_s"] / len(seeds))
        per_image = {k: statistics.median(v) for k, v in draws.items()}
        base_out, one, one_fused = (outputs[k] for k in list(variants)[:3])
        two, two_fused = outputs["two adapters (0.8 + 0.6), unfused"], outputs["two adapters (0.8 + 0.6), fused"]
        fuse_once = generate(pipe, both, [prompt], [0], steps=1, guidance=5.0, fuse=True).timings["fuse_s"]

    diffs = {
        "one adapter: fused vs unfused": _max_diff(one, one_fused),
        "one adapter: merged for good vs unfused": _max_diff(one, outputs["one adapter, fused, LoRA layers removed"]),
        "two adapters: fused vs unfused": _max_diff(two, two_fused),
        "reference scale: one adapter vs base": _max_diff(one, base_out),
    }
    result = {
        "model": base.name,
        "family": family.name,
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "settings": {
            "steps": steps,
            "images": images,
            "repeats": repeats,
            "train_steps": train_steps,
            "resolution": one.settings["width"],
        },
        "seconds": rows,
        "seconds_per_image": per_image,
        "fuse_seconds": fuse_once,
        "max_pixel_difference_levels": diffs,
        "tolerance_levels": TOLERANCE_LEVELS,
        "fused_within_tolerance": all(v <= TOLERANCE_LEVELS for k, v in diffs.items() if not k.startswith("reference")),
        "swap_speedup_vs_reload": rows["load base + adapter (the alternative to a swap)"]
        / rows["swap the active adapter (set_adapters)"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)


def _print(r: dict) -> None:
    print(f"{r['model']} ({r['family']}), {r['device']}, {r['settings']}")
    print("| operation | seconds |\n|---|---|")
    for k, v in r["seconds"].items():
        print(f"| {k} | {v:.4f} |")
    print(f"| fuse two adapters into the base (and restore after) | {r['fuse_seconds']:.4f} |")
    base = r["seconds_per_image"]["base alone (no LoRA layers)"]
    print("\n| generation | s/image | vs base |\n|---|---|---|")
    for k, v in r["seconds_per_image"].items():
        print(f"| {k} | {v:.4f} | {v / base:.2f}x |")
    print("\n| max pixel difference (0-255) | levels |\n|---|---|")
    for k, v in r["max_pixel_difference_levels"].items():
        print(f"| {k} | {v} |")
    print(
        f"\nswap is {r['swap_speedup_vs_reload']:.0f}x faster than loading base + adapter; "
        f"fused within {r['tolerance_levels']} levels: {r['fused_within_tolerance']}"
    )


if __name__ == "__main__":
    app()
