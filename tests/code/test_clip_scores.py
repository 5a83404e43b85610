"""Each CLIP score on unit embeddings whose answer is known by hand, and the text CLIP-T is scored on."""

import math

import pytest
import torch

from components.clip_scores import clip_i, clip_t, diversity, paired_drift
from components.config import Concept
from components.evaluate import scored_prompt

E0, E1, E2 = torch.eye(3)
DIAGONAL = (E0 + E1) / math.sqrt(2)  # cos 1/sqrt(2) with E0 and with E1


def test_clip_t_pairs_text_i_with_image_i():
    texts, images = torch.stack([E0, E1]), torch.stack([E0, DIAGONAL])
    assert clip_t(texts, images) == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    # Not the mean over every (text, image) pair, which would be (1 + 0.707 + 0 + 0.707) / 4.
    assert clip_t(texts, torch.stack([E1, E0])) == pytest.approx(0.0)


def test_clip_i_averages_every_generated_real_pair():
    generated, real = torch.stack([E0, E1]), torch.stack([E0, E0, E2])
    assert clip_i(generated, real) == pytest.approx((1 + 1 + 0 + 0 + 0 + 0) / 6)
    assert clip_i(torch.stack([DIAGONAL]), torch.stack([E0, E1])) == pytest.approx(1 / math.sqrt(2))


def test_diversity_is_the_mean_over_prompts_of_mean_pairwise_one_minus_cos():
    emb = torch.stack([E0, E0, E1, E2, -E2])
    # prompt 1 (3 seeds): pairs 1-1=0, 1-0=1, 1-0=1 -> 2/3; prompt 2 (2 seeds): 1-(-1) = 2 -> mean 4/3
    assert diversity(emb, [[0, 1, 2], [3, 4]]) == pytest.approx((2 / 3 + 2) / 2)
    assert diversity(emb, [[0, 1]]) == pytest.approx(0.0), "identical images: no diversity"
    assert diversity(emb, [[0], [3]]) == 0.0, "one seed per prompt: no pairs, no diversity"


def test_paired_drift_compares_the_same_prompt_and_seed():
    base, adapter = torch.stack([E0, E1]), torch.stack([E0, -E1])
    assert paired_drift(base, adapter) == pytest.approx((0 + 2) / 2)
    assert paired_drift(base, base) == pytest.approx(0.0)


def test_clip_t_is_scored_on_the_prompt_without_the_identifier():
    concept = Concept(name="toy", class_noun="triangle", instance_token="sks", photos="photos")
    assert scored_prompt("a photo of a {instance} on a green background", concept) == (
        "a photo of a triangle on a green background"
    )
    assert scored_prompt("a photo of a {class_noun}", concept) == "a photo of a triangle"
    assert "sks" not in scored_prompt("{instance} in the jungle", concept)
