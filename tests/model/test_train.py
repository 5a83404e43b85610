"""DreamBooth + LoRA training on the tiny real models: outputs, resume, divergence, variants."""

import csv
import json
import math
import shutil
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from components.config import ConfigError
from components.errors import CheckpointMismatch, TrainingDiverged
from components.pipeline import run_caption, run_curate, run_prior, run_train
from components.train import load_train_data, train


@pytest.fixture
def prepared(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    run_prior(cfg, layout)
    return cfg, layout


def with_train(cfg, **update):
    params = cfg.params.model_copy(update={"train": cfg.params.train.model_copy(update=update)})
    return cfg.model_copy(update={"params": params})


def adapter_tensors(layout):
    return load_file(str(layout.adapter / "pytorch_lora_weights.safetensors"))


def test_train_writes_adapter_config_and_loss_curve(prepared):
    cfg, layout = prepared
    result = run_train(cfg, layout)
    files = {p.name for p in layout.adapter.iterdir()}
    assert {
        "pytorch_lora_weights.safetensors",
        "kohya_lora.safetensors",
        "train_config.json",
        "loss.csv",
        "train.json",
    } <= files
    config = json.loads((layout.adapter / "train_config.json").read_text())
    assert config["params"]["alpha"] == 8.0 and config["params"]["rank"] == 4
    assert config["class_images"] == 4 and config["base_model"]["name"] == "tiny-sd"
    rows = list(csv.DictReader(open(layout.adapter / "loss.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(float(r["prior_loss"]) > 0 for r in rows), "prior-preservation loss is computed"
    assert result.steps == 6 and np.isfinite(result.final_loss)
    assert any(t.abs().max() > 0 for k, t in adapter_tensors(layout).items() if "lora.up" in k), (
        "B (lora.up) moved from 0"
    )
    # only the newest checkpoints_total_limit=2 checkpoints are kept (steps 2 and 4; 6 is the final adapter)
    assert sorted(p.name for p in layout.checkpoints.iterdir()) == ["step-0000002", "step-0000004"]


def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(prepared, tmp_path):
    cfg, layout = prepared
    run_train(cfg, layout)
    uninterrupted = adapter_tensors(layout)

    # "Interrupt" after step 4: keep only the checkpoint at step 4, then resume to the end.
    for ckpt in layout.checkpoints.iterdir():
        if ckpt.name != "step-0000004":
            shutil.rmtree(ckpt)
    shutil.rmtree(layout.adapter)
    result = run_train(cfg, layout, resume="yes")

    assert result.resumed_from_step == 4
    resumed = adapter_tensors(layout)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=0)
    rows = list(csv.DictReader(open(layout.adapter / "loss.csv")))
    assert len(rows) == 6, "the loss curve spans the whole run"


def test_resume_with_other_params_is_refused(prepared):
    cfg, layout = prepared
    run_train(cfg, layout)
    with pytest.raises(CheckpointMismatch, match="other params or inputs"):
        run_train(with_train(cfg, learning_rate=0.01), layout, resume="yes")


def test_auto_resume_starts_over_when_the_inputs_changed(prepared):
    cfg, layout = prepared
    run_train(cfg, layout)  # leaves checkpoints made with the old inputs
    changed = with_train(cfg, learning_rate=0.01)
    result = run_train(changed, layout, resume="auto")
    assert result.resumed_from_step is None
    auto = adapter_tensors(layout)
    run_train(changed, layout, resume="no")
    fresh = adapter_tensors(layout)
    for key in fresh:
        torch.testing.assert_close(auto[key], fresh[key], rtol=0, atol=0)


def test_auto_resume_continues_from_a_matching_checkpoint(prepared):
    """What DVC runs (`--auto-resume`): an interrupted run with unchanged inputs picks up where it was."""
    cfg, layout = prepared
    run_train(cfg, layout)
    uninterrupted = adapter_tensors(layout)
    for ckpt in layout.checkpoints.iterdir():  # "interrupted" after step 4
        if ckpt.name != "step-0000004":
            shutil.rmtree(ckpt)
    shutil.rmtree(layout.adapter)

    result = run_train(cfg, layout, resume="auto")

    assert result.resumed_from_step == 4
    resumed = adapter_tensors(layout)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=0)


def test_non_finite_loss_stops_with_an_error_and_no_adapter(prepared):
    cfg, layout = prepared
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at step \d+"):
        run_train(with_train(cfg, learning_rate=1e30, max_steps=20, checkpoint_every=100), layout)
    assert not layout.adapter.exists(), "a diverged run leaves no adapter behind"


def test_without_prior_preservation_no_class_images_are_needed(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    result = run_train(with_train(cfg, with_prior_preservation=False, max_steps=3), layout)
    rows = list(csv.DictReader(open(layout.adapter / "loss.csv")))
    assert result.steps == 3 and all(float(r["prior_loss"]) == 0 for r in rows)


@contextmanager
def watch_training():
    """Observes a run through torch's global hooks (nothing is replaced): each U-Net and text-encoder
    call in grad mode (one per micro-batch), each start of a module inside them (a checkpointed
    block runs its modules again during backward; a pre-hook, as recomputation may stop before a
    module returns), and each real optimiser step."""
    seen = dict.fromkeys(["unet_calls", "te_calls", "unet_layer_starts", "te_layer_starts", "optimizer_steps"], 0)
    seen["unet_layers"] = seen["te_layers"] = 0
    models = {"UNet2DConditionModel": ("unet", "ResnetBlock2D"), "CLIPTextModel": ("te", "CLIPMLP")}
    layers = {layer: name for name, layer in models.values()}

    def on_start(module, args):
        kind = type(module).__name__
        if kind in layers and torch.is_grad_enabled():
            seen[f"{layers[kind]}_layer_starts"] += 1
        elif kind in models and torch.is_grad_enabled():  # not the cache pass before the loop
            name, layer = models[kind]
            seen[f"{name}_calls"] += 1
            seen[f"{name}_layers"] = sum(type(m).__name__ == layer for m in module.modules())

    def on_step(optimizer, args, kwargs):
        seen["optimizer_steps"] += 1

    handles = [
        torch.nn.modules.module.register_module_forward_pre_hook(on_start),
        register_optimizer_step_post_hook(on_step),
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor after ``step`` optimiser steps (linear warm-up, then half a cosine to 0)."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_text_encoder_lora_accumulation_and_checkpointing_options(prepared):
    cfg, layout = prepared
    steps, accumulation, warmup = 5, 2, 2
    variant = with_train(
        cfg,
        train_text_encoder=True,
        gradient_accumulation_steps=accumulation,
        gradient_checkpointing=True,
        lr_scheduler="cosine",
        lr_warmup_steps=warmup,
        max_steps=steps,
        checkpoint_every=100,
    )
    with watch_training() as seen:
        run_train(variant, layout)
    tensors = adapter_tensors(layout)
    for part in ("unet.", "text_encoder."):
        ups = [t for k, t in tensors.items() if k.startswith(part) and k.endswith(".up.weight")]
        assert ups and any(t.abs().max() > 0 for t in ups), f"{part} LoRA B moved from 0 (gradients reached it)"

    # Accumulation: every step runs `accumulation` micro-batches (a forward each) and one optimiser update.
    assert seen["unet_calls"] == seen["te_calls"] == steps * accumulation
    assert seen["optimizer_steps"] == steps
    # Checkpointing: modules inside the U-Net and the text encoder run again during backward (without
    # it each runs exactly once per call).
    assert seen["unet_layer_starts"] > seen["unet_calls"] * seen["unet_layers"] > 0, seen
    assert seen["te_layer_starts"] > seen["te_calls"] * seen["te_layers"] > 0, seen

    # The lr column after each optimiser step is the closed-form cosine schedule (U-Net group).
    lrs = [float(r["lr"]) for r in csv.DictReader(open(layout.adapter / "loss.csv"))]
    expected = [variant.params.train.learning_rate * cosine_with_warmup(k, warmup, steps) for k in range(1, steps + 1)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    linear = [
        variant.params.train.learning_rate * (k / warmup if k < warmup else (steps - k) / (steps - warmup))
        for k in range(1, steps + 1)
    ]
    assert lrs != pytest.approx(linear, rel=1e-3), "the steps chosen tell cosine from linear decay"


def test_v_prediction_and_bert_text_encoder_models_train(prepared, models_dir, tmp_path):
    from components.tiny_models import build_tiny_sd

    cfg, layout = prepared
    build_tiny_sd(models_dir / "tiny-sd-v", prediction_type="v_prediction")
    # The target per prediction type is checked on known tensors in tests/code/test_loss_target.py;
    # here: this model really takes the v branch, and both layouts train end to end.
    scheduler_config = json.loads((models_dir / "tiny-sd-v" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["prediction_type"] == "v_prediction"
    for base in (str(models_dir / "tiny-sd-v"), "tiny-taiyi"):
        data = load_train_data(base, 64, layout.curated, layout.captions, None)
        params = cfg.params.train.model_copy(update={"with_prior_preservation": False, "max_steps": 2})
        result = train(data, params, layout.adapter, layout.checkpoints)
        assert np.isfinite(result.final_loss)
    # A BERT text encoder's LoRA would train but never load back into the pipeline (diffusers reads
    # text-encoder LoRA by CLIP's layer names): refused before the first step, naming the key.
    params = params.model_copy(update={"train_text_encoder": True})
    with pytest.raises(ConfigError, match=r"train\.train_text_encoder: .*BERT.*set train\.train_text_encoder: false"):
        train(data, params, tmp_path / "te-adapter", tmp_path / "te-checkpoints")
    assert not (tmp_path / "te-adapter").exists()
