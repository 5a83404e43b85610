"""DreamBooth + LoRA on the toy world, judged by the domain CLIP: the concept is learned, prompts
still steer it, prior preservation keeps the class, the gate tells good adapters from bad ones, and
steps and rank move the numbers the expected way. Every test runs once per toy base
(components/toyworld/bases.py) with that base's thresholds (tests/quality/thresholds.py), which sit
between the values measured on it with room to spare on either side."""

import json

import pytest

from components.promote import decide

pytestmark = pytest.mark.quality


def test_adapter_images_look_like_the_instance_and_base_images_do_not(variant, limits):
    m = variant("default").metrics
    assert m["clip_i_gain"] >= limits.learning_margin, m
    # "a photo of a sks triangle": the base draws other colours (orange), the adapter the purple one.
    assert m["adapter_p0_colour"] >= limits.instance_colour and m["base_p0_colour"] <= limits.base_colour, m


def test_prompt_attributes_still_steer_the_learned_concept(variant, limits):
    m = variant("default").metrics
    # "a photo of a sks triangle on a green background" and "... large ... on a blue background":
    # the background follows the prompt and the object keeps the concept's colour.
    assert m["adapter_p1_background"] >= limits.background and m["adapter_p3_background"] >= limits.background, m
    if limits.background_instance_colour is not None:  # None: not established on this base (thresholds.py)
        assert m["adapter_p1_colour"] >= limits.background_instance_colour, m
    if limits.steered_colour is not None:  # None: not established on this base (thresholds.py)
        assert (m["adapter_p1_colour"] + m["adapter_p3_colour"]) / 2 >= limits.steered_colour, m
    assert m["base_p1_colour"] + m["base_p3_colour"] <= limits.base_steered_colour, m


def test_prior_preservation_keeps_the_class_and_its_absence_drifts(variant, limits):
    with_prior, without = variant("default").metrics, variant("no_prior").metrics
    # toyworld-sd over 160 seeds: the prior-preserved adapter drifts 0.27 [0.25, 0.29] and 8-seed means
    # range 0.17-0.36 (benchmarks/gate_stability.py), so a threshold sits above that range.
    assert with_prior["prior_drift"] <= limits.max_drift, with_prior
    if limits.drift_ratio is not None:  # None: not established on this base (thresholds.py)
        assert without["prior_drift"] >= limits.drift_ratio * with_prior["prior_drift"], (with_prior, without)
    # Without it, "a photo of a triangle" turns into the instance (DreamBooth's PRES, with CLIP).
    if limits.class_gain_delta is not None:
        assert without["class_clip_i_gain"] >= with_prior["class_clip_i_gain"] + limits.class_gain_delta, (
            with_prior,
            without,
        )
    assert with_prior["class_diversity"] >= limits.diversity_ratio * with_prior["base_class_diversity"], with_prior


def _gate(outcome, prepared):
    """The concept's gate (params.yaml plus its overrides) against the base model, on the outcome's paired
    (prompt, seed) scores."""
    rule = prepared.cfg.params.promotion
    samples = json.loads((outcome.eval_dir / "metrics.json").read_text())["samples"]
    return [c.name for c in decide(samples, None, rule) if not c.passed]


def test_gate_accepts_the_trained_adapter(variant, prepared):
    assert _gate(variant("default"), prepared) == []


@pytest.mark.parametrize(
    ("name", "reasons", "also_allowed"),
    [
        ("untrained", {"learned"}, set()),  # B = 0: exactly the base model
        ("noise", {"learned"}, set()),  # random weights of the trained adapter's size
        # Ignores the prompt and drifts; whether it still looks like the instance or breaks down ("learned")
        # depends on float summation order at its learning rate (test below).
        ("overtrained", {"clip_t", "prior_drift"}, {"learned"}),
    ],
)
def test_gate_refuses_bad_adapters_for_the_right_reason(variant, prepared, limits, name, reasons, also_allowed):
    if name == "overtrained" and limits.overtrained_clip_t_drop is None:
        pytest.skip("over-training does not lose the prompt on this base (tests/quality/thresholds.py)")
    failed = _gate(variant(name), prepared)
    allowed = reasons | also_allowed | {"clip_i"}
    assert failed and set(failed) <= allowed and reasons & set(failed), (failed, variant(name).metrics)


def test_more_steps_learn_more_and_over_training_loses_the_prompt(variant, limits):
    short, default = variant("short").metrics, variant("default").metrics
    assert default["clip_i_gain"] >= short["clip_i_gain"] + limits.steps_gain, (short, default)
    if limits.overtrained_clip_t_drop is None:  # None: not established on this base (thresholds.py)
        return
    over = variant("overtrained").metrics
    # Over-trained (many steps at a high learning rate, no prior): the prompt no longer steers it and the
    # class drifts. Each claim is a mean over all images, not a count of 4: at this learning rate float
    # summation order (CPU, thread count) sends runs apart (README, "Toy world"). Whether it still looks
    # like the instance is one of those: CLIP-I gain 0.21-0.24 on three machine/thread pairs, 0.07 (broken
    # down) on a Xeon at 2 threads, so it is not asserted.
    assert over["clip_t"] <= default["clip_t"] - limits.overtrained_clip_t_drop, (default, over)
    assert over["prior_drift"] >= limits.overtrained_drift_ratio * default["prior_drift"], (default, over)


def test_lower_rank_learns_less_at_the_same_steps(variant, limits):
    # Same alpha/rank scale and steps: rank 1 has fewer directions to learn the instance in.
    if limits.rank_gain is None:
        pytest.skip("not established on this base (tests/quality/thresholds.py)")
    rank1, default = variant("rank1").metrics, variant("default").metrics
    assert rank1["clip_i_gain"] <= default["clip_i_gain"] - limits.rank_gain, (rank1, default)
