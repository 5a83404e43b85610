"""The promotion rule on its own: paired (prompt, seed) scores in, checks with intervals out."""

import pytest

from components.config import PromotionParams
from components.intervals import bootstrap_mean
from components.promote import decide

RULE = PromotionParams(min_clip_i_gain=0.05, clip_i_margin=0.02, clip_t_margin=0.0, max_prior_drift=0.2)
PROMPTS, SEEDS = ("a photo of sks", "sks on the beach", "a red sks", "sks in the snow"), range(6)
WOBBLE = (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5)  # per-seed offsets (x spread) that average to zero


def evaluation(clip_i=0.85, clip_t=0.31, drift=0.1, base_clip_i=0.75, base_clip_t=0.30, spread=0.0):
    """An evaluation's samples whose means are exactly the given numbers; ``spread`` makes the
    adapter's scores vary from seed to seed (the base's do not), so the paired changes vary too."""
    concept = [
        {
            "kind": "concept",
            "prompt": p,
            "seed": s,
            "scores": {
                "clip_i": clip_i + spread * WOBBLE[s],
                "clip_t": clip_t + spread * WOBBLE[s],
                "base_clip_i": base_clip_i,
                "base_clip_t": base_clip_t,
            },
        }
        for p in PROMPTS
        for s in SEEDS
    ]
    prior = [
        {"kind": "class", "prompt": p, "seed": s, "scores": {"prior_drift": drift + spread * WOBBLE[s]}}
        for p in ("a triangle", "a triangle on white")
        for s in SEEDS
    ]
    return concept + prior


def failed(challenger, reference=None, rule=RULE):
    return [c.name for c in decide(challenger, reference, rule) if not c.passed]


def test_identical_samples_give_a_zero_width_interval_at_their_mean():
    interval = bootstrap_mean([0.3] * 12, ["a"] * 6 + ["b"] * 6)
    assert interval.low == interval.mean == interval.high == pytest.approx(0.3, abs=1e-15)
    assert interval.samples == 12 and interval.confidence == 0.95


def test_the_interval_is_seeded_and_holds_the_mean():
    values, strata = [0.1, 0.4, 0.2, 0.5, 0.0, 0.3, 0.25, 0.35], ["a", "a", "a", "a", "b", "b", "b", "b"]
    first, again = bootstrap_mean(values, strata, seed=0), bootstrap_mean(values, strata, seed=0)
    assert first == again
    assert first.low < first.mean < first.high and first.mean == pytest.approx(sum(values) / 8)
    assert bootstrap_mean(values, strata, seed=1) != first
    # A wider confidence gives a wider interval; more seeds of the same spread a narrower one.
    wide = bootstrap_mean(values, strata, confidence=0.99)
    assert wide.low <= first.low and wide.high >= first.high
    more = bootstrap_mean(values * 4, strata * 4)
    assert more.high - more.low < first.high - first.low


def test_a_clear_gain_is_promoted():
    checks = decide(evaluation(clip_i=0.95, spread=0.01), None, RULE)
    assert [c.name for c in checks if not c.passed] == []
    learned = checks[0]
    assert learned.interval.low > RULE.min_clip_i_gain and learned.interval.mean == pytest.approx(0.2)


def test_a_gain_whose_interval_straddles_the_rule_is_refused_with_the_interval():
    # Mean gain 0.06 clears 0.05; seed-to-seed spread puts the lower bound below it.
    noisy = evaluation(clip_i=0.81, clip_t=0.40, spread=0.02)
    learned = next(c for c in decide(noisy, None, RULE) if c.name == "learned")
    assert not learned.passed and learned.interval.low < 0.05 < 0.06 == pytest.approx(learned.interval.mean)
    assert f"[{learned.interval.low:+.4f}, {learned.interval.high:+.4f}] (95%, 24 pairs)" in learned.detail
    assert f"lower bound {learned.interval.low:+.4f} is below +0.0500" in learned.detail
    # The same mean without the spread passes.
    assert failed(evaluation(clip_i=0.81, clip_t=0.40)) == []


def test_a_drift_whose_upper_bound_exceeds_the_limit_is_refused():
    assert failed(evaluation(drift=0.18)) == []
    check = decide(evaluation(drift=0.18, clip_t=0.5, spread=0.03), None, RULE)[3]
    assert check.name == "prior_drift" and not check.passed and check.interval.high > 0.2
    assert f"upper bound {check.interval.high:.4f} is above it" in check.detail


def test_an_adapter_that_learned_too_little_is_refused():
    assert failed(evaluation(clip_i=0.75)) == ["learned"]  # the base model itself
    assert failed(evaluation(clip_i=0.7)) == ["learned", "clip_i"]
    assert failed(evaluation(clip_i=0.799)) == ["learned"]
    assert failed(evaluation(clip_i=0.8)) == []


def test_against_a_champion_within_margin_passes_beyond_fails():
    champion = evaluation(clip_i=0.90, clip_t=0.30)
    assert failed(evaluation(clip_i=0.881, clip_t=0.30), champion) == []
    assert failed(evaluation(clip_i=0.879, clip_t=0.30), champion) == ["clip_i"]
    assert failed(evaluation(clip_i=0.90, clip_t=0.299), champion) == ["clip_t"]


def test_each_rule_fails_on_its_own():
    assert failed(evaluation(clip_t=0.299)) == ["clip_t"]
    assert failed(evaluation(drift=0.21)) == ["prior_drift"]
    assert failed(evaluation(clip_i=0.5, clip_t=0.1, drift=0.9)) == ["learned", "clip_i", "clip_t", "prior_drift"]


def test_a_reference_at_other_pairs_is_not_compared():
    other = [dict(s, seed=s["seed"] + 100) for s in evaluation()]
    with pytest.raises(ValueError, match="other \\(prompt, seed\\) pairs"):
        decide(evaluation(), other, RULE)


def test_details_carry_the_numbers():
    checks = {c.name: c for c in decide(evaluation(clip_i=0.7), evaluation(clip_i=0.8), RULE)}
    assert "CLIP-I 0.7000 vs reference 0.8000" in checks["clip_i"].detail and "margin 0.02" in checks["clip_i"].detail
    assert "[-0.1000, -0.1000]" in checks["clip_i"].detail
    assert "CLIP-I gain over the base model -0.0500" in checks["learned"].detail and "0.05" in checks["learned"].detail
