"""toyworld-flux's builder at smoke size: it trains a FluxPipeline on the toy world from the committed
VAE and CLIP, saves it in diffusers' format, and the project loads, samples (with true classifier-free
guidance) and trains it through its flux family."""

import json
from pathlib import Path

import pytest
import torch

from components.toyworld.build_flux import FLUX_NAME, FLUX_PRESETS, build_flux_world

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyworld-flux")
    return out, build_flux_world(out, FLUX_PRESETS["smoke"], sources=MODELS, log=lambda _: None)


def test_build_writes_a_flux_pipeline_the_project_loads(built):
    from components.base_model import load_pipeline, native_resolution
    from components.families import family_for

    out, section = built
    folder = out / FLUX_NAME
    assert family_for(folder).name == "flux" and native_resolution(folder) == 32
    pipe = load_pipeline(str(folder))
    assert type(pipe).__name__ == "FluxPipeline" and pipe.vae_scale_factor == 4
    assert pipe.transformer.config.in_channels == 16 and not pipe.transformer.config.guidance_embeds
    assert isinstance(pipe.vae.config.shift_factor, float)  # FluxPipeline adds it back when decoding
    saved = json.loads((out / "toyworld-build.json").read_text())["bases"][FLUX_NAME]
    assert saved["command"] == "conceptlab toyworld build --base flux --seed 0"
    assert saved["scheduler"]["shift"] == 1.0 and not saved["scheduler"]["use_dynamic_shifting"]
    assert set(saved["metrics"]["prompt_following_accuracy"]) == set(saved["metrics"]["chance"])
    assert saved == section


def test_generation_applies_true_cfg_and_training_runs_through_the_flux_family(built):
    from components.base_model import load_pipeline
    from components.config import GenerationParams
    from components.families import family_of
    from components.families.base import LossOptions
    from components.generation import generate

    pipe = load_pipeline(str(built[0] / FLUX_NAME))
    images = [
        generate(pipe, ["a photo of a red star"], [0], GenerationParams(steps=2, guidance_scale=g), 32)[0]
        for g in (1.0, 5.0)
    ]
    assert images[0].size == (32, 32) and images[0].tobytes() != images[1].tobytes()  # guidance acts

    family = family_of(pipe)
    parts = family.parts(pipe)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    noised = family.noisy_input(parts.scheduler, latents, torch.randn(2, 4, 8, 8, generator=g), g, LossOptions())
    prompt = family.encode_prompts(parts, family.tokenize(parts, ["a photo of a sks triangle", ""]))
    assert prompt["t5"].shape[1] == 32  # the tokenizer's length, as FluxPipeline is called with
    assert family.predict(parts, noised.noisy, noised.timesteps, prompt, {}).shape == latents.shape
