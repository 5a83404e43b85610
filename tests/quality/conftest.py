"""For each toy base (components/toyworld/bases.py), its concept prepared once per session, and its
training variants, each trained and evaluated on first use.

Broken on purpose, to see these tests fail: QUALITY_PARAMS_OVERRIDES (JSON, deep-merged over params.yaml
and over each concept's own overrides), e.g. '{"train": {"learning_rate": 0}}', or for the flow-matching
bases a wrong noise-level shift '{"train": {"timestep_shift": 0.1}}' (a variant's own setting still wins,
e.g. the over-trained variant's learning rate); QUALITY_BREAK=flipped_velocity trains the flow-matching bases
towards x0 - noise instead of noise - x0, QUALITY_BREAK=flipped_noise the U-Net bases towards -noise (sign
errors no params key can make). QUALITY_METRICS_JSON names a file to write every variant's metrics to, by
base."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch

from components.toyworld.bases import TOY_BASES, ToyBase
from components.toyworld.experiment import Outcome, Prepared, evaluate_variant, prepare, train_variant
from tests.quality.thresholds import THRESHOLDS, Thresholds


@pytest.fixture(scope="session", params=list(TOY_BASES))
def toy_base(request) -> ToyBase:
    """One session-scoped instance per base; pytest runs each base's tests together, then frees it."""
    return TOY_BASES[request.param]


@pytest.fixture(scope="session")
def limits(toy_base) -> Thresholds:
    return THRESHOLDS[toy_base.model]


@pytest.fixture(scope="session", autouse=True)
def _broken_on_purpose():
    """QUALITY_BREAK=flipped_velocity: the flow-matching families' training target with its sign flipped;
    flipped_noise: the DDPM U-Net families' (epsilon: -noise)."""
    from components.families import flow_matching, sd

    with pytest.MonkeyPatch.context() as patch:
        if os.environ.get("QUALITY_BREAK") == "flipped_velocity":
            patch.setattr(flow_matching, "velocity_target", lambda x0, noise: x0 - noise)
        if os.environ.get("QUALITY_BREAK") == "flipped_noise":
            target = sd.loss_target
            patch.setattr(sd, "loss_target", lambda *args: -target(*args))
        yield


@pytest.fixture(scope="session")
def prepared(toy_base, tmp_path_factory) -> Prepared:
    overrides = json.loads(os.environ.get("QUALITY_PARAMS_OVERRIDES", "{}"))
    return prepare(toy_base.concept, tmp_path_factory.mktemp(toy_base.model), overrides)


VARIANTS: dict[str, dict] = {
    "default": {},  # params.yaml as the demo runs it: prior preservation on
    "no_prior": {"with_prior_preservation": False},
    "untrained": {"learning_rate": 0.0, "max_steps": 1},  # B stays 0 (AdamW at lr 0): exactly the base model
    "short": {"max_steps": 40},
    "rank1": {"rank": 1, "alpha": 2.0},  # same alpha/rank scale as the default rank 8, alpha 16
    "overtrained": {"with_prior_preservation": False, "max_steps": 1500, "learning_rate": 0.005},
}


@pytest.fixture(scope="session")
def variant(toy_base, prepared):
    """variant(name) -> Outcome, trained and evaluated once per session and base."""
    done: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name not in done:
            if name == "noise":
                done[name] = evaluate_variant(prepared, noise_adapter(get("default").adapter_dir))
            else:
                overrides = VARIANTS[name] | toy_base.variants.get(name, {})
                done[name] = evaluate_variant(prepared, train_variant(prepared, name, overrides))
        return done[name]

    yield get
    if os.environ.get("QUALITY_METRICS_JSON"):
        _record_metrics(os.environ["QUALITY_METRICS_JSON"], toy_base.model, done)


def _record_metrics(path: str, base: str, done: dict[str, Outcome]) -> None:
    """Adds this base's variants to the file, keeping the other bases' entries."""
    recorded = json.loads(open(path).read()) if os.path.exists(path) else {}
    recorded[base] = {name: outcome.metrics for name, outcome in done.items()}
    with open(path, "w") as f:
        json.dump(recorded, f, indent=2)


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
