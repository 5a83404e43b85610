"""One toy-world concept prepared once per session, and its training variants, each trained and
evaluated on first use. QUALITY_PARAMS_OVERRIDES (JSON, deep-merged into params.yaml) breaks the
training on purpose, to see these tests fail: '{"train": {"learning_rate": 0}}'. QUALITY_METRICS_JSON
names a file to write every variant's metrics to."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch

from components.toyworld.experiment import Outcome, Prepared, evaluate_variant, prepare, train_variant

CONCEPT = "toy-purple-triangle"  # the demo's concept


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Prepared:
    overrides = json.loads(os.environ.get("QUALITY_PARAMS_OVERRIDES", "{}"))
    return prepare(CONCEPT, tmp_path_factory.mktemp("quality"), overrides)


VARIANTS: dict[str, dict] = {
    "default": {},  # params.yaml as the demo runs it: prior preservation on
    "no_prior": {"with_prior_preservation": False},
    "untrained": {"learning_rate": 0.0},  # B stays 0: exactly the base model
    "short": {"max_steps": 40},
    "rank1": {"rank": 1, "alpha": 2.0},  # same alpha/rank scale as the default rank 8, alpha 16
    "overtrained": {"with_prior_preservation": False, "max_steps": 1500, "learning_rate": 0.005},
}


@pytest.fixture(scope="session")
def variant(prepared):
    """variant(name) -> Outcome, trained and evaluated once per session."""
    done: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name not in done:
            if name == "noise":
                done[name] = evaluate_variant(prepared, noise_adapter(get("default").adapter_dir))
            else:
                done[name] = evaluate_variant(prepared, train_variant(prepared, name, VARIANTS[name]))
        return done[name]

    yield get
    if os.environ.get("QUALITY_METRICS_JSON"):
        with open(os.environ["QUALITY_METRICS_JSON"], "w") as f:
            json.dump({name: outcome.metrics for name, outcome in done.items()}, f, indent=2)


def noise_adapter(trained_dir):
    """The trained adapter's tensors replaced by Gaussian noise of the same size and spread."""
    target = trained_dir.parent.parent / "noise" / "adapter"
    target.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for path in trained_dir.iterdir():
        if path.name == "pytorch_lora_weights.safetensors":
            tensors = safetensors.torch.load_file(str(path))
            metadata = safetensors.safe_open(str(path), "pt").metadata()
            noisy = {k: torch.randn(v.shape, generator=gen) * v.std() for k, v in tensors.items()}
            safetensors.torch.save_file(noisy, str(target / path.name), metadata=metadata)
    return target
