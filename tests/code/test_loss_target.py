"""The training target on known tensors: the noise for epsilon models, the velocity for v-prediction
models (checked against diffusers and against the closed form from SD1.x's schedule, rebuilt here)."""

import pytest
import torch
from diffusers import DDPMScheduler

from components.families.sd import loss_target

SD1_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def known_tensors():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=g)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    return latents, noise, torch.tensor([0, 500, 999])


def test_epsilon_models_learn_the_noise():
    latents, noise, timesteps = known_tensors()
    target = loss_target(DDPMScheduler(**SD1_SCHEDULE, prediction_type="epsilon"), latents, noise, timesteps)
    torch.testing.assert_close(target, noise, rtol=0, atol=0)


def test_v_prediction_models_learn_the_velocity():
    latents, noise, timesteps = known_tensors()
    scheduler = DDPMScheduler(**SD1_SCHEDULE, prediction_type="v_prediction")
    target = loss_target(scheduler, latents, noise, timesteps)

    torch.testing.assert_close(target, scheduler.get_velocity(latents, noise, timesteps))
    # Independently of diffusers: SD1.x's "scaled_linear" betas, alpha_bar = prod(1 - beta),
    # v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0 (Salimans & Ho 2022).
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, dim=0)[timesteps].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise.double() - (1 - alpha_bar).sqrt() * latents.double()
    torch.testing.assert_close(target.double(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(target, noise, atol=1e-2), "v differs from the noise (a wrong target would pass)"


def test_an_unsupported_prediction_type_is_an_error_that_names_it():
    latents, noise, timesteps = known_tensors()
    with pytest.raises(ValueError, match=r"prediction_type 'sample' is not one train supports"):
        loss_target(DDPMScheduler(**SD1_SCHEDULE, prediction_type="sample"), latents, noise, timesteps)
