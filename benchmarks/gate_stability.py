"""How many evaluation seeds make the gate's verdict stable: the same adapter, evaluated with other
seeds, gets the same verdict. Trains the demo concept on the toy world (params.yaml, and optionally
other step counts), evaluates each adapter once at a pool of seeds, then gates it (against the base
model, params.yaml's rule) on disjoint seed sets of each candidate size drawn from that pool, and
counts how many verdicts agree. An image depends on its (prompt, seed) only (components/generation.py),
so a seed set's scores from the pool are the scores an evaluation with exactly those seeds records.
Prints a table and writes benchmarks/results/gate_stability.json.

    uv run python -m benchmarks.gate_stability                      # ~10 min on 2 busy cores
    uv run python -m benchmarks.gate_stability --counts 4 --counts 8 --sets 20 --steps 200 --steps 150
    uv run python -m benchmarks.gate_stability --regate    # the stored intervals under params.yaml's rule now

--regate decides the verdicts again from the intervals stored in the results file, without generating:
exact, as the rule's thresholds only meet the intervals' bounds (the confidence and resample count
must be those the intervals were made with; it checks).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from components.config import PromotionParams
from components.promote import decide
from components.toyworld.experiment import REPO, prepare, train_variant

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RESULTS = Path(__file__).parent / "results"
CONCEPT = "toy-purple-triangle"  # the demo's concept


def evaluate_pool(prep, adapter_dir: Path, seeds: list[int], out_dir: Path) -> list[dict]:
    """The adapter's per-(prompt, seed) scores at every seed of the pool (one evaluate run)."""
    from components.pipeline import run_evaluate

    evaluate = prep.cfg.params.evaluate.model_copy(update={"seeds": seeds})
    cfg = prep.cfg.model_copy(update={"params": prep.cfg.params.model_copy(update={"evaluate": evaluate})})
    return [s.model_dump() for s in run_evaluate(cfg, prep.layout, adapter_dir=adapter_dir, out_dir=out_dir).samples]


BOUNDS = {"learned": 0, "clip_i": 0, "clip_t": 0, "prior_drift": 2}  # the bound each check's rule meets


def limits(rule: PromotionParams) -> dict[str, float]:
    return {
        "learned": rule.min_clip_i_gain,
        "clip_i": -rule.clip_i_margin,
        "clip_t": -rule.clip_t_margin,
        "prior_drift": rule.max_prior_drift,
    }


def regate(verdict: dict, rule: PromotionParams) -> dict:
    """The verdict of stored intervals under ``rule`` (the same comparisons as components.promote)."""
    limit = limits(rule)
    failed = [
        name
        for name, bounds in verdict["intervals"].items()
        if (bounds[2] > limit[name] if BOUNDS[name] == 2 else bounds[0] < limit[name])
    ]
    return {**verdict, "passed": not failed, "failed": failed}


def gate(samples: list[dict], seeds: list[int], rule: PromotionParams) -> dict:
    """The gate's checks on the samples of these seeds only."""
    chosen = set(seeds)
    checks = decide([s for s in samples if s["seed"] in chosen], None, rule)
    return {
        "passed": all(c.passed for c in checks),
        "failed": [c.name for c in checks if not c.passed],
        "intervals": {c.name: [c.interval.low, c.interval.mean, c.interval.high] for c in checks},
    }


def summary(verdicts: list[dict]) -> dict:
    passed = sum(v["passed"] for v in verdicts)

    def spread(check: str, bound: int) -> list[float]:
        values = [v["intervals"][check][bound] for v in verdicts]
        return [round(min(values), 4), round(max(values), 4)]

    return {
        "agree": max(passed, len(verdicts) - passed),
        "passed": passed,
        "failed_checks": dict(Counter(name for v in verdicts for name in v["failed"])),
        "gain_low_range": spread("learned", 0),
        "clip_t_change_low_range": spread("clip_t", 0),
        "drift_high_range": spread("prior_drift", 2),
        "verdicts": verdicts,
    }


def print_table(console: Console, results: dict) -> None:
    sets = results["sets"]
    table = Table(title=f"gate verdicts on {sets} disjoint seed sets (against the base model, {results['concept']})")
    for col in ("steps", "seeds", "agree", "passed", "failed checks", "gain low", "CLIP-T chg low", "drift high"):
        table.add_column(col)
    for n_steps, entry in results["adapters"].items():
        for count, row in entry["counts"].items():
            table.add_row(
                n_steps,
                count,
                f"{row['agree']}/{sets}",
                str(row["passed"]),
                ", ".join(f"{k} x{v}" for k, v in sorted(row["failed_checks"].items())) or "-",
                "{:.3f}..{:.3f}".format(*row["gain_low_range"]),
                "{:+.3f}..{:+.3f}".format(*row["clip_t_change_low_range"]),
                "{:.3f}..{:.3f}".format(*row["drift_high_range"]),
            )
    console.print(table)


def regate_file(console: Console, path: Path, rule: PromotionParams) -> None:
    results = json.loads(path.read_text())
    made = {k: results["rule"][k] for k in ("confidence", "bootstrap_resamples")}
    if made != {k: getattr(rule, k) for k in made}:
        raise SystemExit(f"{path}: intervals made with {made}; params.yaml's rule differs, run the benchmark again")
    results["decided_with_rule"] = rule.model_dump()
    for entry in results["adapters"].values():
        entry["all_pool_seeds"] = regate(entry["all_pool_seeds"], rule)
        for count, row in entry["counts"].items():
            entry["counts"][count] = summary([regate(v, rule) for v in row["verdicts"]])
    path.write_text(json.dumps(results, indent=2) + "\n")
    print_table(console, results)
    console.print(f"decided again under params.yaml's rule: {path}")


@app.command()
def main(
    counts: Annotated[list[int], typer.Option(help="candidate numbers of seeds")] = [4, 8, 12],  # noqa: B006
    sets: Annotated[int, typer.Option(help="disjoint seed sets per candidate")] = 20,
    steps: Annotated[list[int], typer.Option(help="training steps of the adapters to gate")] = [200],  # noqa: B006
    out: Annotated[Path, typer.Option(help="results file")] = RESULTS / "gate_stability.json",
    regate_only: Annotated[bool, typer.Option("--regate", help="decide the stored intervals again")] = False,
):
    console = Console(width=200)
    rule = PromotionParams(**yaml.safe_load((REPO / "params.yaml").read_text())["promotion"])
    if regate_only:
        return regate_file(console, out, rule)
    pool = list(range(1000, 1000 + sets * max(counts)))  # away from params.yaml's seeds
    results: dict = {
        "concept": CONCEPT,
        "rule": rule.model_dump(),
        "decided_with_rule": rule.model_dump(),
        "sets": sets,
        "pool_seeds": len(pool),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "adapters": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        prep = prepare(CONCEPT, Path(tmp))
        results["prepare_s"] = round(time.time() - started, 1)
        for n_steps in steps:
            started = time.time()
            adapter = train_variant(prep, f"steps{n_steps}", {"max_steps": n_steps})
            trained_s = time.time() - started
            samples = evaluate_pool(prep, adapter, pool, Path(tmp) / f"eval{n_steps}")
            entry = {
                "train_s": round(trained_s, 1),
                "evaluate_s": round(time.time() - started - trained_s, 1),
                "all_pool_seeds": gate(samples, pool, rule),
                "counts": {},
            }
            for count in counts:
                verdicts = [gate(samples, pool[i * count : (i + 1) * count], rule) for i in range(sets)]
                entry["counts"][str(count)] = summary(verdicts)
            results["adapters"][str(n_steps)] = entry
            pooled = entry["all_pool_seeds"]["intervals"]
            console.print(
                f"{n_steps} steps, all {len(pool)} pool seeds: "
                + "; ".join(f"{k} {v[1]:+.4f} [{v[0]:+.4f}, {v[2]:+.4f}]" for k, v in pooled.items())
                + f" (trained in {trained_s:.0f} s, evaluated in {entry['evaluate_s']:.0f} s)"
            )
    print_table(console, results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    app()
