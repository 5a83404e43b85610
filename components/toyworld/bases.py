"""The toy bases the quality tests and benchmarks/toyworld_quality.py run on: a committed toy model
(models/<name>) and the shipped concept trained on it. The concept's concept.yaml names the base, and
its `overrides:` carry whatever that family trains or evaluates differently (learning rate, Chinese
prompts, the CLIP that reads them), so the experiments below stay blind to the family."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ToyBase:
    model: str  # folder under models/
    concept: str  # folder under concepts/, whose base_model is ``model``
    # Training overrides per quality variant where this family needs other numbers than the U-Net's
    # (e.g. the learning rate that over-trains it); merged over tests/quality's VARIANTS.
    variants: dict[str, dict] = field(default_factory=dict)


TOY_BASES: dict[str, ToyBase] = {
    "toyworld-sd": ToyBase("toyworld-sd", "toy-purple-triangle"),
    "toyworld-flux": ToyBase("toyworld-flux", "toy-flux-triangle"),
    "toyworld-taiyi": ToyBase("toyworld-taiyi", "toy-zh-triangle"),
}
