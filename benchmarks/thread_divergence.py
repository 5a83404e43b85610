"""The same training at 1 and at 2 threads: where the loss curves part and how far apart the adapters
end (README, "The same run on another machine"). Writes benchmarks/results/thread_divergence.json.

    uv run python -m benchmarks.thread_divergence
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from components.toyworld.experiment import prepare, train_variant

VARIANTS = {
    "default": {},  # params.yaml: 200 steps, lr 1e-3, prior preservation
    "over300": {"with_prior_preservation": False, "max_steps": 300, "learning_rate": 0.005},
}


def _run(prep, name: str, overrides: dict, threads: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    torch.set_num_threads(threads)
    adapter = train_variant(prep, f"{name}-t{threads}", overrides)
    losses = [float(r["loss"]) for r in csv.DictReader(open(adapter / "loss.csv"))]
    return losses, load_file(str(adapter / "pytorch_lora_weights.safetensors"))


def compare(prep, name: str, overrides: dict) -> dict:
    (l1, w1), (l2, w2) = _run(prep, name, overrides, 1), _run(prep, name, overrides, 2)
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(l1, l2, strict=True)]
    diff = sum(((w1[k] - w2[k]) ** 2).sum() for k in w1) ** 0.5
    norm = sum((w1[k] ** 2).sum() for k in w1) ** 0.5
    return {
        "first_differing_step": next((i + 1 for i, r in enumerate(rel) if r), None),
        "loss_rel_diff_at": {s: rel[s - 1] for s in (1, 10, 50, 100, 200, len(rel)) if s <= len(rel)},
        "adapter_rel_l2_diff": float(diff / norm),
    }


def main() -> None:
    prep = prepare("toy-purple-triangle", Path(tempfile.mkdtemp()))
    out = {}
    for name, overrides in VARIANTS.items():
        out[name] = compare(prep, name, overrides)
        print(
            f"{name:8s} first differing step {out[name]['first_differing_step']}, "
            f"adapters {out[name]['adapter_rel_l2_diff']:.2e} apart; loss rel. diff {out[name]['loss_rel_diff_at']}"
        )
    path = Path(__file__).parent / "results" / "thread_divergence.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
