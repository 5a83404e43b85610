"""Flow-matching training math, checked on known tensors and against diffusers' own sampler and pipelines."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from components.families import flow_matching as fm
from components.tiny_models_flow import FLUX_DEV_SCHEDULER, FLUX_SCHNELL_SCHEDULER, SD3_SCHEDULER


def test_noisy_input_interpolates_from_image_to_noise():
    x0 = torch.full((2, 1, 2, 2), 2.0)
    noise = torch.full((2, 1, 2, 2), -1.0)
    xt = fm.noisy_input(x0, noise, torch.tensor([0.25, 1.0]))
    assert torch.equal(xt[0], torch.full((1, 2, 2), 0.75 * 2.0 + 0.25 * -1.0))
    assert torch.equal(xt[1], noise[1])  # s = 1 is pure noise


def test_velocity_target_is_noise_minus_image():
    x0, noise = torch.tensor([3.0]), torch.tensor([1.0])
    assert fm.velocity_target(x0, noise).item() == -2.0


@pytest.mark.parametrize("sigma", [0.3, 0.8])
def test_one_euler_step_of_the_sampler_with_the_true_target_lands_on_the_image(sigma):
    """The sign convention that matters: diffusers' flow-matching sampler, given the training target as the
    model output at x_t, steps to x0 exactly. A flipped target or a wrong interpolation misses it."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    xt = fm.noisy_input(x0, noise, torch.tensor([sigma]))
    scheduler = FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)
    scheduler.set_timesteps(sigmas=[sigma], device="cpu")
    scheduler.sigmas = torch.tensor([sigma, 0.0])  # exactly one step from sigma to 0
    out = scheduler.step(fm.velocity_target(x0, noise), scheduler.timesteps[0], xt).prev_sample
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_shift_matches_the_sd3_scheduler_training_sigmas():
    scheduler = FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)
    n = scheduler.config.num_train_timesteps
    unshifted = torch.arange(n, 0, -1, dtype=torch.float32) / n
    assert fm.scheduler_shift(scheduler.config, image_seq_len=16) == 3.0
    torch.testing.assert_close(fm.shift_noise_levels(unshifted, 3.0), scheduler.sigmas, rtol=0, atol=1e-6)
    assert fm.shift_noise_levels(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)


@pytest.mark.parametrize("seq_len", [16, 256, 1024, 4096])
def test_flux_dev_shift_matches_the_pipeline_schedule_for_that_image_size(seq_len):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER)
    mu = calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
    u = [1.0, 0.75, 0.5, 0.25]
    scheduler.set_timesteps(sigmas=u, mu=mu, device="cpu")
    assert fm.scheduler_shift(scheduler.config, seq_len) == pytest.approx(math.exp(mu))
    shifted = fm.shift_noise_levels(torch.tensor(u), fm.scheduler_shift(scheduler.config, seq_len))
    torch.testing.assert_close(shifted, scheduler.sigmas[:-1], rtol=0, atol=1e-6)


def test_flux_schnell_does_not_shift():
    assert fm.scheduler_shift(FLUX_SCHNELL_SCHEDULER, image_seq_len=4096) == 1.0
    u = torch.tensor([0.1, 0.9])
    assert torch.equal(fm.shift_noise_levels(u, 1.0), u)


def test_noise_level_densities_are_reproducible_and_shaped():
    draw = lambda density: fm.sample_noise_levels(20_000, torch.Generator().manual_seed(3), density)  # noqa: E731
    ln, uni = draw("logit_normal"), draw("uniform")
    assert torch.equal(ln, draw("logit_normal"))
    assert ln.min() > 0 and ln.max() < 1 and uni.min() >= 0 and uni.max() < 1
    assert ln.mean().item() == pytest.approx(0.5, abs=0.01) and uni.mean().item() == pytest.approx(0.5, abs=0.01)
    # logit-normal concentrates around the middle: fewer draws in the outer fifths than uniform's 40 %
    outer = lambda u: ((u < 0.2) | (u > 0.8)).float().mean().item()  # noqa: E731
    assert outer(ln) < 0.2 and outer(uni) == pytest.approx(0.4, abs=0.02)
    with pytest.raises(ValueError, match="density"):
        fm.sample_noise_levels(2, torch.Generator(), "cosmap")


def test_latents_are_normalized_with_shift_then_scale():
    z = torch.tensor([1.0])
    assert fm.normalize_latents(z, {"scaling_factor": 0.5, "shift_factor": 0.2}).item() == pytest.approx(0.4)
    assert fm.normalize_latents(z, {"scaling_factor": 0.5, "shift_factor": None}).item() == 0.5


def test_flux_packing_puts_each_2x2_patch_in_one_token_and_round_trips():
    latents = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    packed = fm.pack_latents(latents)
    assert packed.shape == (2, (4 // 2) * (6 // 2), 3 * 4)
    # token 1 = patch at row 0, col 1: channel-major, then the 2x2 pixels row by row
    assert torch.equal(packed[0, 1], latents[0, :, 0:2, 2:4].reshape(-1))
    assert torch.equal(fm.unpack_latents(packed, 4, 6), latents)
    ids = fm.latent_image_ids(4, 6)
    assert ids.shape == (6, 3) and ids[1].tolist() == [0.0, 0.0, 1.0] and ids[3].tolist() == [0.0, 1.0, 0.0]
    assert torch.equal(fm.text_ids(5), torch.zeros(5, 3))


def test_guidance_input_only_for_guidance_distilled_models():
    assert torch.equal(fm.guidance_input({"guidance_embeds": True}, 2), torch.tensor([3.5, 3.5]))
    assert fm.guidance_input({"guidance_embeds": False}, 2) is None
