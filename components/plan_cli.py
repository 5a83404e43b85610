"""`conceptlab plan`: a concept's (or a named shape's) memory/time estimates as a table and JSON.

Kept apart from components.cli so that the stages' CLI never imports the planner's tracing code."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from components.config import ConfigError, load_config
from components.plan import plan_report, setting_of


def concept_report(concept: Path, params: Path, gpu: str, gpu_memory: float | None, **override) -> dict:
    """The concept's base model, resolution and train params (params.yaml + its overrides); ``override``
    (resolution, rank, batch_size) replaces what is not None."""
    from components.base_model import resolve_model
    from components.pipeline import resolution as concept_resolution
    from components.plan_shapes import meta_model_from_folder

    concept_file = concept / "concept.yaml" if concept.is_dir() else concept
    cfg = load_config(concept_file, params)
    train = cfg.params.train
    return plan_report(
        meta_model_from_folder(resolve_model(cfg.concept.base_model)),
        resolution=override.get("resolution") or concept_resolution(cfg),
        batch_size=(override.get("batch_size") or train.batch_size) // train.num_processes,  # per GPU
        rank=override.get("rank") or train.rank,
        prior_preservation=train.with_prior_preservation,
        train_text_encoder=train.train_text_encoder,
        text_encoder_rank=train.text_encoder_rank,
        target_modules=train.target_modules,
        current=setting_of(train),
        gpu=gpu,
        gpu_memory_gib=gpu_memory,
    )


def shape_report(shape: str, resolution, rank, batch_size, prior: bool, gpu: str, gpu_memory) -> dict:
    from components.plan_shapes import SHAPES, meta_model_named

    if shape not in SHAPES:
        raise ConfigError(f"--shape {shape!r}: choose one of {', '.join(SHAPES)}, or plan a concept (--concept)")
    return plan_report(
        meta_model_named(shape),
        resolution=resolution or SHAPES[shape][2],
        batch_size=batch_size or 1,
        rank=rank or 16,
        prior_preservation=prior,
        gpu=gpu,
        gpu_memory_gib=gpu_memory,
    )


def report_table(report: dict) -> Table:
    memory = report["gpu_memory_gib"]
    title = (
        f"{report['model']} ({report['family']}), {report['resolution']} px, batch {report['batch_size']} "
        f"({report['denoiser_rows']} denoiser rows), LoRA rank {report['rank']} "
        f"({report['lora_params_millions']} M params); estimates, s/step on {report['gpu']}"
    )
    table = Table(title=title)
    for col in ("optimizer", "base quant", "checkpointing", "offload", "precision", "loop GiB", "caching GiB"):
        table.add_column(col, justify="right" if "GiB" in col else "left")
    table.add_column("peak GiB", justify="right", style="bold")
    table.add_column("s/step", justify="right")
    table.add_column(f"fits {memory:g} GiB" if memory else "fits", justify="center")
    current = report.get("current")
    for r in report["rows"]:
        here = current is not None and all(r[k] == v for k, v in current.items())
        fits = "-" if r["fits"] is None else ("[green]yes[/]" if r["fits"] else "[red]no[/]")
        table.add_row(
            r["optimizer"],
            r["base_quantization"],
            "yes" if r["gradient_checkpointing"] else "no",
            r["offload_frozen"],
            r["mixed_precision"],
            _num(r["loop_gib"]),
            _num(r["caching_gib"]),
            _num(r["peak_gib"]),
            _num(r["s_per_step"]),
            fits,
            style="reverse" if here else None,
        )
    return table


def _num(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def write_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
