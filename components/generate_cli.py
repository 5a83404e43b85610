"""`conceptlab generate`: concept specs with weights -> resolved adapters -> pictures + settings.json.

Kept apart from components.cli so that stages importing the CLI never import generation code.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from components.generate import (
    DEFAULTS,
    GenerationError,
    ResolvedAdapter,
    generate,
    load_base,
    replay,
    resolve_adapter,
    write_result,
)
from components.io import read_json


def parse_weighted(spec: str) -> tuple[str, float]:
    """``a:0.8`` -> ("a", 0.8); a spec without a numeric ``:WEIGHT`` suffix has weight 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return spec, 1.0
        if not math.isfinite(weight):
            raise GenerationError(f"concept {spec!r}: weight {tail!r} is not a finite number")
        return head, weight
    return spec, 1.0


def run_generate(
    console,
    prompts: list[str],
    concepts: list[str],
    seeds: list[int],
    steps: int | None,
    guidance: float | None,
    width: int | None,
    height: int | None,
    sampler: str | None,
    negative_prompt: str,
    fuse: bool,
    out: Path | None,
    tracking_uri: str | None,
    base_model: str | None,
    settings_file: Path | None,
) -> list[Path]:
    from diffusers.utils import logging as diffusers_logging
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    diffusers_logging.disable_progress_bar()  # the bar below counts the denoising steps instead

    out = out or Path("generated") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("generate", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if settings_file is not None:
            if prompts or concepts:
                raise GenerationError("--settings draws the recorded pictures again: give no --prompt or --concept")
            result = replay(read_json(settings_file), tracking_uri, progress=progress, base_model=base_model)
        else:
            adapters: list[tuple[ResolvedAdapter, float]] = []
            for spec in concepts:
                name, weight = parse_weighted(spec)
                adapters.append((resolve_adapter(name, tracking_uri, base_model=base_model), weight))
            if adapters:
                base = adapters[0][0].base_model
            elif base_model:
                from components.adapters import _base_model

                base = _base_model({}, base_model, None, "--base-model")
            else:
                raise GenerationError("name a concept (--concept NAME), or a --base-model to draw with the base alone")
            if not prompts:
                raise GenerationError('prompt: none given; add --prompt "a photo of a sks <class>"')
            recorded = adapters[0][0].eval_settings if adapters else {}
            pipe = load_base(base)
            result = generate(
                pipe,
                adapters,
                prompts,
                seeds,
                steps=steps or recorded.get("steps", DEFAULTS["steps"]),
                guidance=guidance if guidance is not None else recorded.get("guidance", DEFAULTS["guidance"]),
                width=width,
                height=height,
                sampler=sampler or recorded.get("sampler", DEFAULTS["sampler"]),
                fuse=fuse,
                negative_prompt=negative_prompt,
                progress=progress,
            )
    paths = write_result(result, out)
    s = result.settings
    used = ", ".join(f"{a['name']} v{a['version']}" if a["version"] else a["source"] for a in s["adapters"])
    console.print(
        f"generate: {len(paths)} image(s) {s['width']}x{s['height']}, {s['steps']} steps, guidance {s['guidance']}, "
        f"{s['sampler']}{', fused' if s['fuse'] else ''}; base {s['base_model']['name']}"
        f"{'; ' + used if used else ''} in {result.seconds:.1f} s"
    )
    for path in paths:
        console.print(f"  {path}")
    console.print(f"settings: {out / 'settings.json'} (draw them again: conceptlab generate --settings ...)")
    return paths
