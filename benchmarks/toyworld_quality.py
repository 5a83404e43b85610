"""Concept learning on the toy world, for every shipped concept task on toyworld-sd and the concept of
every other toy base (components/toyworld/bases.py): base model vs adapter trained with and without
prior preservation, same prompts and seeds, scored by the concept's evaluation CLIP. Prints a table and
writes benchmarks/results/toyworld_quality.json.

    uv run python -m benchmarks.toyworld_quality                  # all of them (~10 min on 2 cores)
    uv run python -m benchmarks.toyworld_quality toy-orange-star
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from components.toyworld.bases import TOY_BASES
from components.toyworld.experiment import evaluate_variant, prepare, train_variant
from components.toyworld.tasks import CONCEPT_TASKS

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"
COLUMNS = (
    "clip_i",
    "clip_t",
    "diversity",
    "prior_drift",
    "class_clip_i",
    "class_diversity",
    "p0_colour",
    "p1_background",
)


def _row(metrics: dict, prefix: str) -> dict[str, float]:
    row = {k: metrics.get(f"{prefix}{k}", metrics.get(k)) for k in COLUMNS}
    if prefix == "base_":
        row["prior_drift"] = 0.0
    return row


@app.command()
def main(concepts: Annotated[list[str] | None, typer.Argument()] = None):
    console = Console(width=200)  # a wide table, also when the output is a file
    results = {}
    table = Table(title="toy world: base vs adapter (same prompts and seeds, domain CLIP)")
    for col in ("concept", "base", "model", *COLUMNS, "train s"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp:
        for name in concepts or _all_concepts():
            prep = prepare(name, Path(tmp) / name)
            rows = {}
            for variant, overrides in (("with prior", {}), ("without prior", {"with_prior_preservation": False})):
                started = time.time()
                outcome = evaluate_variant(prep, train_variant(prep, variant.replace(" ", "-"), overrides))
                seconds = time.time() - started
                if not rows:
                    rows["base"] = _row(outcome.metrics, "base_") | {"seconds": 0.0}
                rows[variant] = _row(outcome.metrics, "adapter_") | {"seconds": seconds}
            base = prep.cfg.concept.base_model
            results[name] = {"base_model": base, "rows": rows}
            for label, row in rows.items():
                table.add_row(name, base, label, *(f"{row[c]:.3f}" for c in COLUMNS), f"{row['seconds']:.0f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "toyworld_quality.json").write_text(json.dumps(results, indent=2) + "\n")


def _all_concepts() -> list[str]:
    names = [t.name for t in CONCEPT_TASKS]
    return names + [b.concept for b in TOY_BASES.values() if b.concept not in names]


if __name__ == "__main__":
    app()
