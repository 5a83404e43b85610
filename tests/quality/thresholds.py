"""The quality claims' numbers, per toy base: each sits between values measured on that base
(QUALITY_METRICS_JSON writes them; README, "Toy world") with room on either side, at 1 and 2 threads.
None: a claim not established on that base (its measured values, in the comment, do not separate); the
tests skip that claim alone and say so."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    learning_margin: float  # the default adapter's CLIP-I gain over the base model, at least
    instance_colour: float  # share of "a photo of a sks <class>" images in the concept's colour, at least
    base_colour: float  # ... and of the base model's images, at most
    background_instance_colour: float | None  # "... on a green background" images in the concept's colour
    background: float  # share of images with the background the prompt asked for, at least
    steered_colour: float | None  # the concept's colour kept on the asked backgrounds (mean of two prompts)
    base_steered_colour: float  # the base model's sum over the same two prompts, at most
    max_drift: float  # prior drift with prior preservation, at most
    drift_ratio: float | None  # drift without prior preservation over drift with it, at least
    class_gain_delta: float | None  # "a photo of a <class>" moves toward the instance without the prior loss
    diversity_ratio: float  # class diversity kept with the prior loss, relative to the base model
    steps_gain: float  # 200 steps gain this much more CLIP-I than 40
    overtrained_clip_t_drop: float | None  # over-trained: CLIP-T below the default adapter's by this
    overtrained_drift_ratio: float | None  # over-trained: drift over the default adapter's, at least
    rank_gain: float | None  # rank 8 gains this much more CLIP-I than rank 1 at the same steps


THRESHOLDS: dict[str, Thresholds] = {
    # Measured at evaluate's 8 seeds (1 / 2 threads): CLIP-I gain 0.23 (40 steps 0.08, rank 1 0.07,
    # noise -0.01); drift 0.28 with the prior loss, 0.42 without; class CLIP-I gain 0.11 vs 0.16;
    # over-trained CLIP-T 0.49 / 0.45 vs 0.60, drift 0.48 / 0.62 vs 0.18-0.28; on another CPU at 1 thread
    # (2026-12-02) CLIP-T 0.53 vs 0.60 and drift 0.49 vs 0.28 (1.76x: a 2x threshold failed there); on a
    # Xeon (2026-12-03) at 1 / 2 threads CLIP-T 0.519 / 0.531 vs 0.603, drift 0.475 / 0.462 vs 0.281 (1.69x /
    # 1.64x), CLIP-I gain 0.207 / 0.074 (at 2 threads it broke down instead of copying the photos).
    "toyworld-sd": Thresholds(
        learning_margin=0.10,
        instance_colour=0.75,
        base_colour=0.25,
        background_instance_colour=0.75,
        background=0.75,
        steered_colour=0.5,
        base_steered_colour=0.5,
        max_drift=0.36,
        drift_ratio=1.3,
        class_gain_delta=0.02,
        diversity_ratio=0.7,
        steps_gain=0.05,
        overtrained_clip_t_drop=0.05,
        overtrained_drift_ratio=1.5,
        rank_gain=0.05,
    ),
    # toy-flux-triangle (400 steps at 2e-3, its concept's overrides), 8 seeds, 1 thread (2026-12-02):
    # CLIP-I gain 0.116 (no prior 0.154, 40 steps 0.043, rank 1 0.106, noise -0.028, B = 0 0.000; broken on
    # purpose: shift 0.1 0.068, shift 10 0.107, flipped velocity -0.021); "a photo of a sks triangle" purple
    # 5/8 (base 0/8), on a green background 1/8, on a blue one 5/8; backgrounds 8/8; drift 0.222 with the
    # prior loss and 0.204 without, class CLIP-I gain 0.123 vs 0.107 (prior preservation's effect is not
    # seen on this base at these settings); class diversity 0.261 vs the base's 0.306. Over-trained (1500
    # steps, no prior) does not copy the photos here: at 5e-3 CLIP-I gain 0.146, CLIP-T 0.568 (-0.016),
    # drift 0.335 (1.5x), the gate passes it; at 1e-2 gain 0.005, CLIP-T 0.540, drift 0.400; at 2e-2 gain
    # 0.070, CLIP-T 0.450, drift 0.666 (the gate refuses it, also for "learned"): it breaks, not copies.
    "toyworld-flux": Thresholds(
        learning_margin=0.09,
        instance_colour=0.5,
        base_colour=0.25,
        background_instance_colour=None,
        background=0.75,
        steered_colour=0.25,
        base_steered_colour=0.5,
        max_drift=0.36,
        drift_ratio=None,
        class_gain_delta=None,
        diversity_ratio=0.7,
        steps_gain=0.03,
        overtrained_clip_t_drop=None,
        overtrained_drift_ratio=None,
        rank_gain=None,
    ),
    # toy-zh-triangle (600 steps at 2e-3, its concept's overrides), Chinese prompts read by toyworld-clip-zh,
    # 8 seeds, 1 thread (2026-12-02): CLIP-I gain 0.103 (no prior 0.044, 40 steps 0.018, rank 1 0.018, noise
    # -0.020, B = 0 0.000); "sks三角形,高清" purple 7/8 (base 0/8), on an asked green or blue background 0/8;
    # backgrounds 8/8; drift 0.315 with the prior loss, 0.322 without (not separated); class CLIP-I gain
    # -0.143 vs -0.045 without; class diversity 0.279 vs the base's 0.343. Over-trained (1500 steps at 5e-3,
    # no prior) breaks rather than copies: gain 0.013, CLIP-T 0.397 vs 0.543, drift 0.451 (the gate refuses
    # it on all four numbers, "learned" included).
    "toyworld-taiyi": Thresholds(
        learning_margin=0.07,
        instance_colour=0.5,
        base_colour=0.25,
        background_instance_colour=None,
        background=0.75,
        steered_colour=None,
        base_steered_colour=0.5,
        max_drift=0.4,
        drift_ratio=None,
        class_gain_delta=0.05,
        diversity_ratio=0.7,
        steps_gain=0.05,
        overtrained_clip_t_drop=None,
        overtrained_drift_ratio=None,
        rank_gain=0.05,
    ),
}
