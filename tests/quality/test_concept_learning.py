"""DreamBooth + LoRA on the toy world, judged by the domain CLIP: the concept is learned, prompts
still steer it, prior preservation keeps the class, the gate tells good adapters from bad ones, and
steps and rank move the numbers the expected way. Thresholds sit between the measured values
(README, "Toy world"; QUALITY_METRICS_JSON writes them) with room to spare on either side."""

import json

import pytest
import yaml

from components.config import PromotionParams
from components.promote import decide
from components.toyworld.experiment import REPO

pytestmark = pytest.mark.quality

# Measured: the default adapter gains 0.23 CLIP-I over the base model at the same prompts and seeds,
# 40 steps gain 0.08, and a random-noise adapter of the trained one's size moves it by -0.01.
LEARNING_MARGIN = 0.10


def test_adapter_images_look_like_the_instance_and_base_images_do_not(variant):
    m = variant("default").metrics
    assert m["clip_i_gain"] >= LEARNING_MARGIN, m
    # "a photo of a sks triangle": the base draws other colours (orange), the adapter the purple one.
    assert m["adapter_p0_colour"] >= 0.75 and m["base_p0_colour"] <= 0.25, m


def test_prompt_attributes_still_steer_the_learned_concept(variant):
    m = variant("default").metrics
    # "a photo of a sks triangle on a green background" and "... large ... on a blue background":
    # the background follows the prompt and the object keeps the concept's colour.
    assert m["adapter_p1_background"] >= 0.75 and m["adapter_p3_background"] >= 0.75, m
    assert m["adapter_p1_colour"] >= 0.75 and (m["adapter_p1_colour"] + m["adapter_p3_colour"]) / 2 >= 0.5, m
    assert m["base_p1_colour"] + m["base_p3_colour"] <= 0.5, m


def test_prior_preservation_keeps_the_class_and_its_absence_drifts(variant):
    with_prior, without = variant("default").metrics, variant("no_prior").metrics
    # Measured at evaluate's 8 seeds: drift 0.28 with the prior loss, 0.42 without (same steps and seeds).
    # Over 160 seeds the prior-preserved adapter drifts 0.27 [0.25, 0.29] and 8-seed means range 0.17-0.36
    # (benchmarks/gate_stability.py); the 0.18 and 0.37 once read at 4 seeds were a lucky seed set.
    assert with_prior["prior_drift"] <= 0.36, with_prior
    assert without["prior_drift"] >= 1.3 * with_prior["prior_drift"], (with_prior, without)
    # Without it, "a photo of a triangle" turns into the instance (DreamBooth's PRES, with CLIP): 0.16 vs 0.11.
    assert without["class_clip_i_gain"] >= with_prior["class_clip_i_gain"] + 0.02, (with_prior, without)
    assert with_prior["class_diversity"] >= 0.7 * with_prior["base_class_diversity"], with_prior


def _gate(outcome):
    """The demo's gate against the base model, on the outcome's paired (prompt, seed) scores."""
    rule = PromotionParams(**yaml.safe_load((REPO / "params.yaml").read_text())["promotion"])
    samples = json.loads((outcome.eval_dir / "metrics.json").read_text())["samples"]
    return [c.name for c in decide(samples, None, rule) if not c.passed]


def test_gate_accepts_the_trained_adapter(variant):
    assert _gate(variant("default")) == []


@pytest.mark.parametrize(
    ("name", "reasons"),
    [
        ("untrained", {"learned"}),  # B = 0: exactly the base model
        ("noise", {"learned"}),  # random weights of the trained adapter's size
        ("overtrained", {"clip_t", "prior_drift"}),  # copies the photos, ignores the prompt
    ],
)
def test_gate_refuses_bad_adapters_for_the_right_reason(variant, name, reasons):
    failed = _gate(variant(name))
    assert failed and set(failed) <= reasons | {"clip_i"} and reasons & set(failed), (failed, variant(name).metrics)


def test_more_steps_learn_more_until_the_adapter_copies_the_photos(variant):
    short, default, over = variant("short").metrics, variant("default").metrics, variant("overtrained").metrics
    assert default["clip_i_gain"] >= short["clip_i_gain"] + 0.05, (short, default)  # measured 0.23 vs 0.08
    # Over-trained (1500 steps at lr 5e-3, no prior): still the instance, but the prompt no longer steers
    # it and the class drifts. Each claim is a mean over all images, not a count of 4: at this learning
    # rate float summation order (CPU, thread count) sends runs apart (README, "Toy world"). Measured at
    # 1 / 2 threads: CLIP-I gain 0.21 / 0.24, CLIP-T 0.49 / 0.45 (default 0.60), drift 0.48 / 0.62 (0.18).
    assert over["clip_i_gain"] >= LEARNING_MARGIN, (default, over)
    assert over["clip_t"] <= default["clip_t"] - 0.05, (default, over)
    assert over["prior_drift"] >= 2 * default["prior_drift"], (default, over)


def test_lower_rank_learns_less_at_the_same_steps(variant):
    # Measured at 200 steps, same alpha/rank: rank 1 gains 0.07, rank 8 gains 0.23.
    assert variant("rank1").metrics["clip_i_gain"] <= variant("default").metrics["clip_i_gain"] - 0.05
