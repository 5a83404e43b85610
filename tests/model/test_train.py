"""DreamBooth + LoRA training on the tiny real models: outputs, resume, divergence, variants."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

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


def test_text_encoder_lora_accumulation_and_checkpointing_options(prepared):
    cfg, layout = prepared
    variant = with_train(
        cfg,
        train_text_encoder=True,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        lr_scheduler="cosine",
        lr_warmup_steps=2,
        max_steps=3,
    )
    run_train(variant, layout)
    keys = adapter_tensors(layout).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(layout.adapter / "loss.csv"))]
    assert lrs[0] < lrs[1], "warm-up raises the learning rate"


def test_v_prediction_and_bert_text_encoder_models_train(prepared, models_dir):
    from components.tiny_models import build_tiny_sd

    cfg, layout = prepared
    build_tiny_sd(models_dir / "tiny-sd-v", prediction_type="v_prediction")
    for base in (str(models_dir / "tiny-sd-v"), "tiny-taiyi"):
        data = load_train_data(base, 64, layout.curated, layout.captions, None)
        params = cfg.params.train.model_copy(update={"with_prior_preservation": False, "max_steps": 2})
        result = train(data, params, layout.adapter, layout.checkpoints)
        assert np.isfinite(result.final_loss)
