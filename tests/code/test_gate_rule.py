"""The promotion rule on its own: numbers in, checks out."""

from components.config import PromotionParams
from components.promote import decide

RULE = PromotionParams(min_clip_i_gain=0.05, clip_i_margin=0.02, clip_t_margin=0.0, max_prior_drift=0.2)
REFERENCE = {"clip_i": 0.80, "clip_t": 0.30, "prior_drift": 0.0, "clip_i_gain": 0.0}


def failed(challenger):
    return [c.name for c in decide({"clip_i_gain": 0.1, **challenger}, REFERENCE, RULE) if not c.passed]


def test_an_adapter_that_learned_too_little_is_refused():
    assert failed({"clip_i": 0.85, "clip_t": 0.31, "prior_drift": 0.0, "clip_i_gain": 0.0}) == ["learned"]
    assert failed({"clip_i": 0.85, "clip_t": 0.31, "prior_drift": 0.0, "clip_i_gain": 0.049}) == ["learned"]
    assert failed({"clip_i": 0.85, "clip_t": 0.31, "prior_drift": 0.0, "clip_i_gain": 0.05}) == []


def test_better_or_equal_passes():
    assert failed({"clip_i": 0.80, "clip_t": 0.30, "prior_drift": 0.1}) == []
    assert failed({"clip_i": 0.90, "clip_t": 0.35, "prior_drift": 0.0}) == []


def test_within_margin_passes_beyond_fails():
    assert failed({"clip_i": 0.781, "clip_t": 0.30, "prior_drift": 0.1}) == []
    assert failed({"clip_i": 0.779, "clip_t": 0.30, "prior_drift": 0.1}) == ["clip_i"]


def test_each_rule_fails_on_its_own():
    assert failed({"clip_i": 0.85, "clip_t": 0.299, "prior_drift": 0.1}) == ["clip_t"]
    assert failed({"clip_i": 0.85, "clip_t": 0.31, "prior_drift": 0.21}) == ["prior_drift"]
    assert failed({"clip_i": 0.5, "clip_t": 0.1, "prior_drift": 0.9}) == ["clip_i", "clip_t", "prior_drift"]


def test_details_carry_the_numbers():
    checks = {
        c.name: c
        for c in decide({"clip_i": 0.7, "clip_t": 0.3, "prior_drift": 0.1, "clip_i_gain": 0.1}, REFERENCE, RULE)
    }
    assert (
        "0.7000" in checks["clip_i"].detail
        and "0.8000" in checks["clip_i"].detail
        and "0.02" in checks["clip_i"].detail
    )
    assert "+0.1000" in checks["learned"].detail and "0.05" in checks["learned"].detail
