"""The loss options of train (min-SNR-gamma, noise offset, flow-matching noise-level density and shift)
on known inputs with hand-computed results, and the errors for options a family or machine cannot use."""

import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

from components.config import ConfigError, TrainParams, load_params
from components.families import flow_matching as fm
from components.families.base import Family, LossOptions
from components.families.flux import Flux
from components.families.sd import ddpm_noisy_input, min_snr_weights, offset_noise, snr
from components.families.sd3 import StableDiffusion3
from components.families.sdxl import StableDiffusionXL
from components.tiny_models_flow import SD3_SCHEDULER
from components.train_memory import check_memory_options

ROOT = Path(__file__).resolve().parents[2]
OPTION_KEYS = [
    "optimizer",
    "base_quantization",
    "offload_frozen",
    "snr_gamma",
    "noise_offset",
    "timestep_density",
    "timestep_logit_mean",
    "timestep_logit_std",
    "timestep_mode_scale",
    "timestep_shift",
]

# Two timesteps with beta = 0.1 each: alpha_bar = 0.9 and 0.81, SNR = 9 and 0.81 / 0.19.
TWO_STEPS = dict(num_train_timesteps=2, beta_start=0.1, beta_end=0.1, beta_schedule="linear")


def test_snr_of_the_schedule():
    got = snr(DDPMScheduler(**TWO_STEPS), torch.tensor([0, 1, 0]))
    torch.testing.assert_close(got, torch.tensor([9.0, 0.81 / 0.19, 9.0]))


def test_min_snr_weights_for_epsilon_and_v_targets():
    s = torch.tensor([0.5, 5.0, 20.0])
    # epsilon: min(snr, 5) / snr
    torch.testing.assert_close(min_snr_weights(s, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 0.25]))
    # v: min(snr, 5) / (snr + 1)
    torch.testing.assert_close(min_snr_weights(s, 5.0, "v_prediction"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 21]))
    # a zero-terminal-SNR step: the epsilon weight is its limit 1 (not nan), the v weight 0
    zero = torch.tensor([0.0])
    assert min_snr_weights(zero, 5.0, "epsilon").item() == 1.0
    assert min_snr_weights(zero, 5.0, "v_prediction").item() == 0.0


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_noisy_input_weights_the_drawn_timesteps(prediction):
    scheduler = DDPMScheduler(**TWO_STEPS, prediction_type=prediction)
    latents, noise = torch.ones(6, 4, 2, 2), torch.zeros(6, 4, 2, 2)
    noised = ddpm_noisy_input(scheduler, latents, noise, torch.Generator().manual_seed(0), LossOptions(snr_gamma=5.0))
    high = 5 / 9 if prediction == "epsilon" else 5 / 10  # SNR 9 is clipped to 5
    low = 1.0 if prediction == "epsilon" else (0.81 / 0.19) / (0.81 / 0.19 + 1)  # SNR 4.26 is kept
    expected = torch.tensor([high if t == 0 else low for t in noised.timesteps.tolist()])
    assert set(noised.timesteps.tolist()) == {0, 1}, "both timesteps drawn: the check covers both weights"
    torch.testing.assert_close(noised.weights, expected)


def test_without_options_ddpm_draws_as_before_and_weighs_nothing():
    scheduler = DDPMScheduler(**TWO_STEPS)
    latents, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    noised = ddpm_noisy_input(scheduler, latents, noise, g1, LossOptions())
    timesteps = torch.randint(0, 2, (3,), generator=g2)
    assert torch.equal(noised.timesteps, timesteps) and noised.weights is None
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2)), "no extra draws"


def test_noise_offset_shifts_each_row_and_channel_by_a_seeded_normal():
    noise = torch.zeros(2, 4, 8, 8)
    out = offset_noise(noise, 0.1, torch.Generator().manual_seed(7))
    expected = 0.1 * torch.randn(2, 4, 1, 1, generator=torch.Generator().manual_seed(7))
    assert out.shape == noise.shape
    torch.testing.assert_close(out, expected.expand_as(noise))
    # the offset's scale: std 0.1 over many rows and channels
    many = offset_noise(torch.zeros(4000, 4, 1, 1), 0.1, torch.Generator().manual_seed(0))
    assert many.std().item() == pytest.approx(0.1, rel=0.05)


def test_noise_offset_enters_the_noisy_input_and_the_epsilon_target():
    scheduler = DDPMScheduler(**TWO_STEPS)
    latents, noise = torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)
    noised = ddpm_noisy_input(
        scheduler, latents, noise, torch.Generator().manual_seed(1), LossOptions(noise_offset=0.5)
    )
    g = torch.Generator().manual_seed(1)
    timesteps = torch.randint(0, 2, (2,), generator=g)
    offset = 0.5 * torch.randn(2, 4, 1, 1, generator=g)
    torch.testing.assert_close(noised.target, offset.expand(2, 4, 2, 2))  # epsilon target = the offset noise
    sqrt_one_minus = (1 - scheduler.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(noised.noisy, sqrt_one_minus * offset.expand(2, 4, 2, 2))


def test_logit_normal_density_is_the_sigmoid_of_a_seeded_normal():
    u = fm.sample_noise_levels(5, torch.Generator().manual_seed(2), "logit_normal", logit_mean=0.5, logit_std=2.0)
    z = torch.randn(5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(u, torch.sigmoid(0.5 + 2.0 * z))
    # logit 0 -> 0.5; logit 1 -> 1 / (1 + e^-1) = 0.731059
    assert torch.sigmoid(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([0.5, 0.731059], abs=1e-6)


def test_mode_density_on_hand_computed_values():
    v = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # 1 - v - 1.29 (cos^2(pi v / 2) - 1 + v): cos^2(pi/8) = 0.853553 -> 0.75 - 1.29 * 0.103553
    expected = [1.0, 0.75 - 1.29 * (math.cos(math.pi / 8) ** 2 - 0.75), 0.5, 0.0]
    assert expected[1] == pytest.approx(0.616416, abs=1e-6)
    torch.testing.assert_close(fm.mode_density(v, 1.29), torch.tensor(expected))
    torch.testing.assert_close(fm.mode_density(v, 0.0), 1 - v)  # scale 0: uniform
    drawn = fm.sample_noise_levels(6, torch.Generator().manual_seed(3), "mode", mode_scale=1.29)
    v = torch.rand(6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(drawn, fm.mode_density(v, 1.29))


def test_shift_formula_on_hand_computed_values():
    u = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # t' = s t / (1 + (s - 1) t); s = 3: 0.75 / 1.5 = 0.5, 1.5 / 2 = 0.75
    torch.testing.assert_close(fm.shift_noise_levels(u, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    # s = 0.5: 0.125 / 0.875 = 1/7, 0.25 / 0.75 = 1/3
    torch.testing.assert_close(fm.shift_noise_levels(u, 0.5), torch.tensor([0.0, 1 / 7, 1 / 3, 1.0]))


def test_flow_family_uses_the_density_and_a_fixed_shift():
    family, scheduler = StableDiffusion3(), FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)
    latents, noise = torch.zeros(4, 16, 4, 4), torch.ones(4, 16, 4, 4)
    options = LossOptions(timestep_density="uniform", timestep_shift=2.0)
    noised = family.noisy_input(scheduler, latents, noise, torch.Generator().manual_seed(4), options)
    u = torch.rand(4, generator=torch.Generator().manual_seed(4))
    sigmas = 2 * u / (1 + u)
    torch.testing.assert_close(noised.timesteps, sigmas * 1000)
    torch.testing.assert_close(noised.noisy, sigmas.view(-1, 1, 1, 1).expand(4, 16, 4, 4))  # x0 = 0, noise = 1
    assert noised.weights is None
    # auto: the family's logit-normal density and the scheduler's own shift (SD3: 3)
    auto = family.noisy_input(scheduler, latents, noise, torch.Generator().manual_seed(4), LossOptions())
    expected = fm.shift_noise_levels(torch.sigmoid(torch.randn(4, generator=torch.Generator().manual_seed(4))), 3.0)
    torch.testing.assert_close(auto.timesteps, expected * 1000)


@pytest.mark.parametrize(("key", "value"), [("snr_gamma", 5.0), ("noise_offset", 0.05)])
def test_unet_options_on_a_flow_family_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"train\.{key}.*flow matching"):
        Flux().check_loss_options(LossOptions(**{key: value}))


@pytest.mark.parametrize(("key", "value"), [("timestep_density", "mode"), ("timestep_shift", 3.0)])
def test_flow_options_on_a_unet_family_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"train\.{key}.*flow-matching"):
        StableDiffusionXL().check_loss_options(LossOptions(**{key: value}))


def test_a_family_that_does_not_override_the_check_refuses_every_option():
    with pytest.raises(ConfigError, match=r"train\.noise_offset"):
        Family.check_loss_options(StableDiffusionXL(), LossOptions(noise_offset=0.1))
    Family.check_loss_options(StableDiffusionXL(), LossOptions())


def test_defaults_apply_to_every_family():
    for family in (Flux(), StableDiffusion3(), StableDiffusionXL()):
        family.check_loss_options(LossOptions.of(TrainParams()))


def test_option_values_are_validated_naming_the_key(tmp_path):
    params = tmp_path / "params.yaml"
    for bad, key in [
        ("timestep_shift: 0", "train.timestep_shift"),
        ("timestep_shift: fast", "train.timestep_shift"),
        ("optimizer: adam8", "train.optimizer"),
        ("base_quantization: fp4", "train.base_quantization"),
        ("offload_frozen: gpu", "train.offload_frozen"),
        ("snr_gamma: 0", "train.snr_gamma"),
        ("timestep_density: beta", "train.timestep_density"),
        ("use_8bit_adam: true", "train.use_8bit_adam"),  # the old key is gone: an unknown-key error
    ]:
        params.write_text(f"train: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_params(params)


def test_params_yaml_lists_every_option_at_its_default():
    text = (ROOT / "params.yaml").read_text()
    train = load_params(ROOT / "params.yaml").train
    for key in OPTION_KEYS:
        assert f"\n  {key}:" in text, f"params.yaml documents train.{key}"
        assert getattr(train, key) == TrainParams.model_fields[key].default, key


@pytest.mark.parametrize(("key", "value"), [("optimizer", "adamw_8bit"), ("base_quantization", "nf4")])
def test_cuda_only_options_on_the_cpu_name_the_key_and_the_fix(key, value):
    with pytest.raises(ConfigError, match=rf"train\.{key} '{value}' needs a CUDA GPU.*") as err:
        check_memory_options(TrainParams(**{key: value}), torch.device("cpu"))
    assert key in str(err.value)


def test_without_bitsandbytes_the_error_names_the_extra():
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here (the gpu extra)")
    with pytest.raises(ConfigError, match=r"uv sync --frozen --extra gpu"):
        check_memory_options(TrainParams(base_quantization="int8"), torch.device("cuda"))
