"""Confidence intervals for the gate's numbers, from paired (prompt, seed) samples.

Every gated number is a mean over images made at the same (prompt, seed) pairs by two models (the
challenger and its reference), so it is estimated from the per-pair differences. The interval is a
percentile bootstrap stratified by prompt: each resample draws, for every prompt, as many seeds as it
has, with replacement. The prompts are the evaluation's fixed choice; the seeds are the noise (another
seed set draws other images), so the interval says how far the mean would move with other seeds.
Seeded: the same samples give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel


class Interval(BaseModel):
    mean: float
    low: float
    high: float
    confidence: float
    samples: int

    def text(self, signed: bool = True) -> str:
        """ "[low, high] (95%, 16 pairs)"; signed for a change, unsigned for a quantity."""
        f = "+.4f" if signed else ".4f"
        return f"[{self.low:{f}}, {self.high:{f}}] ({self.confidence:.0%}, {self.samples} pairs)"


def bootstrap_mean(
    values: Sequence[float],
    strata: Sequence[str],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile interval of the mean of ``values``, resampling within each stratum (prompt)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no paired samples to estimate an interval from")
    if len(strata) != x.size:
        raise ValueError(f"{x.size} values but {len(strata)} strata")
    # Resampled about the first value, so identical samples give exactly [value, value].
    origin = x[0]
    x = x - origin
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples)
    for stratum in dict.fromkeys(strata):  # first-seen order: the draw does not depend on set order
        members = x[[i for i, s in enumerate(strata) if s == stratum]]
        picks = rng.integers(0, members.size, size=(resamples, members.size))
        totals += members[picks].sum(axis=1)
    means = origin + totals / x.size
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    mean = float(origin + x.mean())
    # The interval holds the sample mean (a percentile interval may miss it by a rounding error).
    low, high = min(float(low), mean), max(float(high), mean)
    return Interval(mean=mean, low=low, high=high, confidence=confidence, samples=int(x.size))
