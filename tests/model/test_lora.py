"""The saved adapter reproduces the in-memory one exactly, alpha included, and loads in diffusers."""

import json
import re

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


def diffusers_deltas(path) -> dict[tuple[str, str], torch.Tensor]:
    """(component, module) -> the weight change the diffusers file applies: lora_alpha / r * up @ down,
    with alpha and r from the adapter's own metadata."""
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["lora_adapter_metadata"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    deltas = {}
    for key, down in tensors.items():
        if key.endswith(".down.weight"):
            component, module = key.removesuffix(".down.weight").split(".", 1)
            module = module.removesuffix(".lora").removesuffix(".lora_linear_layer")
            up = tensors[key.replace(".down.weight", ".up.weight")]
            scale = config[f"{component}.lora_alpha"] / config[f"{component}.r"]
            deltas[(component, module.replace(".", "_"))] = scale * up @ down
    return deltas


def kohya_deltas(path) -> dict[tuple[str, str], torch.Tensor]:
    """The same from a kohya file, read as kohya tools read it: alpha / rank * lora_up @ lora_down."""
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    deltas = {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            name = key.removesuffix(".lora_down.weight")
            prefix, module = re.fullmatch(r"lora_(unet|te1?)_(.+)", name).groups()
            up, alpha = tensors[f"{name}.lora_up.weight"], tensors[f"{name}.alpha"].item()
            deltas[("unet" if prefix == "unet" else "text_encoder", module)] = alpha / down.shape[0] * up @ down
    return deltas


def test_kohya_export_carries_the_real_alpha(tmp_path):
    params = TrainParams(rank=4, alpha=12.0, train_text_encoder=True, text_encoder_rank=2)
    pipe = load_pipeline("tiny-sd")
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, params)
    torch.manual_seed(2)
    with torch.no_grad():  # stand-in for training: B != 0, so every delta is non-zero
        for name, p in list(pipe.unet.named_parameters()) + list(pipe.text_encoder.named_parameters()):
            if "lora_B" in name:
                p.normal_(0, 0.05)
    save_adapter(tmp_path, family, parts)

    with safe_open(str(tmp_path / KOHYA_FILE), "pt") as f:
        alphas = {k.split("_", 2)[1]: f.get_tensor(k).item() for k in f.keys() if k.endswith(".alpha")}  # noqa: SIM118
    # U-Net alpha as set; the text encoder's keeps the same alpha/rank ratio at its own rank (12/4 * 2).
    assert alphas == {"unet": 12.0, "te": 6.0}
    expected, exported = diffusers_deltas(tmp_path / ADAPTER_FILE), kohya_deltas(tmp_path / KOHYA_FILE)
    assert exported.keys() == expected.keys() and {c for c, _ in expected} == {"unet", "text_encoder"}
    for module, delta in expected.items():
        assert delta.abs().max() > 0
        torch.testing.assert_close(
            exported[module], delta, rtol=1e-5, atol=1e-7, msg=lambda m, module=module: f"{module}: {m}"
        )
