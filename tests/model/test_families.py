"""Every model family through the same stages, on its tiny random-weight model (plumbing, not learning):
a few training steps give an adapter that (a) loads with the family's own pipeline class, (b) changes its
output, (c) reloads to exactly the in-memory result, (d) evaluates, registers and predicts through the
MLflow pyfunc; plus the kohya export's key format and the precision options.

SD1.x/2.x has its own, older tests (test_lora, test_train, test_evaluate, test_register); a new family
adds its tiny model name to FAMILIES below (and a kohya case where the format exists)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from components.base_model import load_pipeline, resolve_model
from components.config import ConfigError, TrainParams
from components.errors import UnsupportedModel
from components.families import TrainImage, family_for, family_of
from components.io import ADAPTER_FILE, KOHYA_FILE
from components.lora import add_lora, save_adapter
from components.pipeline import run_caption, run_curate, run_train
from tests.model.family_checks import trained_adapter_loads_evaluates_registers_and_predicts

# tiny model -> (family name, pipeline class)
FAMILIES = {"tiny-sdxl": ("sdxl", "StableDiffusionXLPipeline")}

PROMPT = "a photo of sks robot"


def render(pipe) -> np.ndarray:
    return pipe(
        PROMPT, num_inference_steps=3, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images


def on_model(cfg, model: str, **train):
    concept = cfg.concept.model_copy(update={"base_model": model})
    params = cfg.params.model_copy(update={"train": cfg.params.train.model_copy(update=train)})
    return cfg.model_copy(update={"concept": concept, "params": params})


@pytest.mark.parametrize("model", FAMILIES)
def test_the_folder_names_its_family_and_pipeline(model):
    family = family_for(resolve_model(model))
    assert (family.name, family.pipeline) == FAMILIES[model]
    pipe = load_pipeline(model)
    assert type(pipe).__name__ == family.pipeline and family_of(pipe) is family


# How each family's own pipeline encodes a prompt at generation time, as the family's cache keys.
PIPELINE_ENCODING = {
    "sd": lambda pipe: {"hidden": pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]},
    "sdxl": lambda pipe: dict(
        zip(
            ("hidden", "pooled"),
            pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)[::2],
            strict=True,
        )
    ),
}


@pytest.mark.parametrize("model", ["tiny-sd", *FAMILIES])
def test_training_conditions_on_what_the_pipeline_generates_with(model):
    """The cached prompt conditioning equals the pipeline's own encoding: an adapter trained on
    anything else would learn a conditioning it never sees at generation time."""
    pipe = load_pipeline(model)
    family = family_of(pipe)
    parts = family.parts(pipe)
    with torch.no_grad():
        ours = family.encode_prompts(parts, family.tokenize(parts, [PROMPT]))
        theirs = PIPELINE_ENCODING[family.name](pipe)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_an_unknown_pipeline_class_is_a_clear_error(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLImg2ImgPipeline"}))
    with pytest.raises(UnsupportedModel, match=r"StableDiffusionXLImg2ImgPipeline.*StableDiffusionPipeline"):
        family_for(tmp_path)
    with pytest.raises(UnsupportedModel, match="no model_index.json"):
        family_for(tmp_path / "nothing")


@pytest.mark.parametrize("model", FAMILIES)
def test_reloaded_adapter_reproduces_the_in_memory_one_text_encoders_included(model, tmp_path):
    params = TrainParams(rank=4, alpha=16.0, train_text_encoder=True, text_encoder_rank=2)
    pipe = load_pipeline(model)
    base = render(pipe)
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, params)
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: B != 0
        for module in parts.adaptable().values():
            for name, p in module.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    in_memory = render(pipe)
    save_adapter(tmp_path, family, parts)

    fresh = family.pipeline_class().from_pretrained(resolve_model(model), **family.pipeline_kwargs)
    fresh.load_lora_weights(tmp_path)
    reloaded = render(fresh)

    assert np.abs(in_memory - base).max() > 1e-3, "the adapter changes the output"
    assert np.abs(reloaded - in_memory).max() < 1e-5, "reloaded adapter == in-memory adapter"
    for name in parts.adaptable():
        assert getattr(fresh, name).peft_config["default_0"].lora_alpha == (
            16.0 if name == family.denoiser_name else 8.0
        )


@pytest.mark.parametrize("model", FAMILIES)
def test_trained_adapter_loads_evaluates_registers_and_predicts(model, cfg, layout):
    trained_adapter_loads_evaluates_registers_and_predicts(on_model(cfg, model), layout, render, PROMPT)


KOHYA_KEY = re.compile(
    r"^(?P<prefix>lora_unet|lora_te|lora_te1|lora_te2)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$"
)


@pytest.mark.parametrize(
    ("model", "prefixes"),
    [("tiny-sd", {"lora_unet", "lora_te"}), ("tiny-sdxl", {"lora_unet", "lora_te1", "lora_te2"})],
)
def test_kohya_export_uses_the_format_key_names_and_the_real_alpha(model, prefixes, tmp_path):
    """kohya sd-scripts names SD1.x/2.x's text encoder lora_te, SDXL's two lora_te1/lora_te2; the U-Net
    lora_unet; module path dots become underscores, and every module has .alpha (the real one)."""
    params = TrainParams(rank=4, alpha=12.0, train_text_encoder=True, text_encoder_rank=4)
    pipe = load_pipeline(model)
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, params)
    save_adapter(tmp_path, family, parts)
    with safe_open(str(tmp_path / KOHYA_FILE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    bad = [k for k in tensors if not KOHYA_KEY.match(k)]
    assert not bad, bad[:3]
    assert {KOHYA_KEY.match(k)["prefix"] for k in tensors} == prefixes
    assert {v.item() for k, v in tensors.items() if k.endswith(".alpha")} == {12.0}
    modules = {k.rsplit(".", 2)[0] for k in tensors if k.endswith("lora_down.weight")}
    assert modules == {k.removesuffix(".alpha") for k in tensors if k.endswith(".alpha")}
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k" in modules or model == "tiny-sd"
    with safe_open(str(tmp_path / ADAPTER_FILE), "pt") as f:
        metadata = json.loads(f.metadata()["lora_adapter_metadata"])
    assert metadata["unet.target_modules"] == sorted(metadata["unet.target_modules"]), "reproducible bytes"


def test_sdxl_time_ids_come_from_each_photo_size_and_crop():
    family = family_for(resolve_model("tiny-sdxl"))
    # a 200 x 100 photo whose square crop starts 20 px from its left edge, trained at 64 px
    photo = TrainImage(path=None, original_size=(200, 100), crop_box=(20.0, 0.0, 120.0, 100.0))
    ids = family.image_conditioning(photo, 64, flipped=False)["time_ids"].tolist()
    assert ids == [100, 200, 0, 13, 64, 64]  # (h, w), crop (top, left) at 64/100 scale, target
    mirrored = family.image_conditioning(photo, 64, flipped=True)["time_ids"].tolist()
    assert mirrored[3] == 51, "a flipped crop starts 200 - 120 = 80 px from the (new) left: 51 at this scale"
    uncut = family.image_conditioning(TrainImage(None, (64, 64), None), 64, flipped=False)["time_ids"]
    assert uncut.tolist() == [64, 64, 0, 0, 64, 64]


def test_curate_records_the_crop_that_train_reads(cfg, layout, concept_dir):
    wide = Image.new("RGB", (300, 120), (200, 220, 240))
    wide.save(concept_dir / "photos" / "wide.png")
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    from components.train import load_train_data

    data = load_train_data("tiny-sdxl", 64, layout.curated, layout.captions, None)
    found = [i for i in data.instance_images if i.original_size == (300, 120)]
    assert len(found) == 1 and found[0].crop_box == (90.0, 0.0, 210.0, 120.0)


@pytest.mark.parametrize("model", ["tiny-sd", *FAMILIES])
def test_bf16_and_gradient_checkpointing_train_on_the_cpu(model, cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    variant = on_model(
        cfg,
        model,
        mixed_precision="bf16",
        gradient_checkpointing=True,
        train_text_encoder=True,
        with_prior_preservation=False,
        max_steps=2,
    )
    result = run_train(variant, layout)
    assert np.isfinite(result.final_loss)


def test_fp16_on_a_cpu_is_a_clear_error(cfg, layout):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on a GPU")
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA GPU.*'bf16'"):
        run_train(on_model(cfg, "tiny-sd", mixed_precision="fp16", with_prior_preservation=False), layout)
