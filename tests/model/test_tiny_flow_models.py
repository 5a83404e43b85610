"""The tiny Flux and SD3 models have their real layout, load with their pipelines and generate on the CPU."""

import json

import pytest
import torch

from components.base_model import resolve_model
from components.tiny_models_flow import (
    FLUX_VAE_FACTORS,
    SD3_VAE_FACTORS,
    T5_MAX_LENGTH,
    TINY_FLUX,
    TINY_FLUX_SCHNELL,
    TINY_SD3,
    t5_tokenizer,
)


def _generate(pipe, **kwargs):
    return pipe(
        "a photo of sks dog",
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images


def test_t5_tokenizer_keeps_t5_special_ids_and_splits_words():
    tok = t5_tokenizer()
    ids = tok("a photo of sks dog, qx").input_ids
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.unk_token_id == 2  # T5's layout
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids[:5]) == ["▁a", "▁photo", "▁of", "▁sks", "▁dog"]
    assert tok.model_max_length == T5_MAX_LENGTH
    assert len(tok("x " * 600, truncation=True, padding="max_length").input_ids) == T5_MAX_LENGTH


@pytest.mark.parametrize(("name", "guidance"), [(TINY_FLUX, True), (TINY_FLUX_SCHNELL, False)])
def test_tiny_flux_loads_with_flux_pipeline_and_generates(name, guidance):
    from diffusers import FluxPipeline

    folder = resolve_model(name)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    pipe = FluxPipeline.from_pretrained(folder)
    assert pipe.transformer.config.guidance_embeds is guidance
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels == 64
    assert {k: pipe.vae.config[k] for k in FLUX_VAE_FACTORS} == FLUX_VAE_FACTORS
    assert pipe.scheduler.config.use_dynamic_shifting is guidance  # dev shifts by image size, schnell not
    image = _generate(pipe, guidance_scale=3.5 if guidance else 0.0)
    assert image.shape == (1, 64, 64, 3) and image.std() > 0


def test_tiny_sd3_loads_with_sd3_pipeline_and_generates():
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(resolve_model(TINY_SD3))
    assert pipe.vae.config.latent_channels == pipe.transformer.config.in_channels == 16
    assert {k: pipe.vae.config[k] for k in SD3_VAE_FACTORS} == SD3_VAE_FACTORS
    assert pipe.scheduler.config.shift == 3.0
    assert type(pipe.tokenizer_3).__name__ == "T5Tokenizer"
    image = _generate(pipe, guidance_scale=5.0)
    assert image.shape == (1, 64, 64, 3) and image.std() > 0
