"""The saved adapter reproduces the in-memory one exactly, alpha included, and loads in diffusers."""

import numpy as np
import torch
from safetensors import safe_open

from components.base_model import load_pipeline
from components.config import TrainParams
from components.families import family_of
from components.lora import ADAPTER_FILE, KOHYA_FILE, add_lora, save_adapter

PROMPT = "a photo of sks robot"


def render(pipe) -> np.ndarray:
    return pipe(
        PROMPT, num_inference_steps=4, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images


def test_reloaded_adapter_reproduces_in_memory_result_with_alpha_not_rank(tmp_path):
    params = TrainParams(rank=4, alpha=16.0, train_text_encoder=True, text_encoder_rank=2)
    pipe = load_pipeline("tiny-sd")
    base = render(pipe)
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, params)
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: B != 0
        for name, p in list(pipe.unet.named_parameters()) + list(pipe.text_encoder.named_parameters()):
            if "lora_B" in name:
                p.normal_(0, 0.05)
    in_memory = render(pipe)
    save_adapter(tmp_path, family, parts)

    fresh = load_pipeline("tiny-sd")
    fresh.load_lora_weights(tmp_path)
    reloaded = render(fresh)

    assert np.abs(in_memory - base).max() > 1e-3, "the adapter changes the output"
    assert np.abs(reloaded - in_memory).max() < 1e-5, "reloaded adapter == in-memory adapter"
    assert fresh.unet.peft_config["default_0"].lora_alpha == 16.0


def test_kohya_export_carries_the_real_alpha(tmp_path):
    params = TrainParams(rank=4, alpha=12.0)
    pipe = load_pipeline("tiny-sd")
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, params)
    save_adapter(tmp_path, family, parts)
    with safe_open(str(tmp_path / KOHYA_FILE), "pt") as f:
        keys = list(f.keys())
        alphas = {f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert alphas == {12.0}
    assert any(k.startswith("lora_unet_") and "lora_down" in k for k in keys)
    with safe_open(str(tmp_path / ADAPTER_FILE), "pt") as f:
        assert all(k.startswith("unet.") for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)
