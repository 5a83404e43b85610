"""The memory planner (components/plan*.py) against what torch really holds, on the tiny SD model on the
CPU: parameter + gradient + optimizer bytes after a real AdamW step, and the activation bytes of a real
forward and backward (every tensor alive at once, counted as it is made and freed), within 20 %."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from components.base_model import resolve_model
from components.cli import app
from components.config import TrainParams
from components.families import family_for
from components.lora import add_lora
from components.plan import OFFLOADS, OPTIMIZERS, QUANTIZATIONS, Setting, all_settings, estimate, plan
from components.plan_shapes import meta_model_from_folder
from components.plan_trace import _LiveBytes, trace_step

ROWS, RESOLUTION, RANK = 4, 64, 8


@pytest.fixture(scope="module")
def folder():
    return resolve_model("tiny-sd")


@pytest.fixture(scope="module")
def trace(folder):
    return trace_step(meta_model_from_folder(folder), RESOLUTION, ROWS, RANK)


@pytest.fixture(scope="module")
def measured(folder):
    """A real fp32 step of the same LoRA on the CPU: static bytes after AdamW steps, peak activation bytes."""
    torch.manual_seed(0)
    family = family_for(folder)
    parts = family.parts(family.load_pipeline(folder))
    add_lora(family, parts, TrainParams(rank=RANK, alpha=RANK))
    unet = parts.denoiser
    tokens = family.tokenize(parts, ["a photo of sks robot"] * ROWS)
    with torch.no_grad():
        prompt = family.encode_prompts(parts, tokens)
    noisy, timesteps = torch.randn(ROWS, 4, RESOLUTION // 8, RESOLUTION // 8), torch.full((ROWS,), 500)
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad])
    peaks = {}
    for checkpointing in (False, True):
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.zero_grad(set_to_none=True)
        with _LiveBytes() as live:
            family.predict(parts, noisy, timesteps, prompt, {}).float().square().mean().backward()
        optimizer.step()
        lora_grads = sum(p.grad.nbytes for p in unet.parameters() if p.grad is not None)
        peaks[checkpointing] = live.peak - lora_grads  # the planner counts LoRA gradients with the LoRA weights
    grads = sum(p.grad.nbytes for p in unet.parameters() if p.grad is not None)
    state = sum(v.nbytes for s in optimizer.state.values() for v in s.values() if v.dim() > 0)
    return {"static": sum(p.nbytes for p in unet.parameters()) + grads + state, "activations": peaks}


def test_every_option_combination_is_planned_once(trace):
    rows = plan(trace, all_settings())
    settings = {r.setting for r in rows}
    assert len(rows) == len(settings) == len(OPTIMIZERS) * len(QUANTIZATIONS) * 2 * len(OFFLOADS) * 2
    assert [r.peak_gib for r in rows] == sorted(r.peak_gib for r in rows)


def test_quantizing_the_base_strictly_lowers_memory(trace):
    for s in all_settings():
        if s.base_quantization == "none":
            none, nf4, int8 = (estimate(trace, replace(s, base_quantization=q)).loop_gib for q in QUANTIZATIONS)
            assert nf4 < int8 < none, s


def test_caching_is_planned_without_the_denoiser(trace):
    """train builds its cache before loading the denoiser: offload cpu/free holds the largest frozen module
    (the VAE with its encoding activations, or one text encoder), none all of them at once."""
    gib = 2**30
    weights = {n: c.params * 4 for n, c in trace.sizes.items() if n != trace.denoiser_name}  # fp32
    vae = weights.pop("vae") + trace.caching_activations[1]
    for quantization in QUANTIZATIONS:
        each = estimate(trace, Setting("adamw", quantization, False, "cpu", "no")).caching_gib
        together = estimate(trace, Setting("adamw", quantization, False, "none", "no")).caching_gib
        assert each == pytest.approx(max(vae, *weights.values()) / gib)
        assert together == pytest.approx((vae + sum(weights.values())) / gib)


def test_checkpointing_lowers_activations(trace):
    for s in all_settings():
        if not s.gradient_checkpointing:
            on = replace(s, gradient_checkpointing=True)
            assert estimate(trace, on).loop_bytes["activations"] < estimate(trace, s).loop_bytes["activations"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimates_match_what_torch_holds_within_20_percent(trace, measured, checkpointing):
    e = estimate(trace, Setting("adamw", "none", checkpointing, "free", "no")).loop_bytes
    static = e["denoiser"] + e["lora"]  # frozen weights + LoRA weights, gradients and AdamW moments
    assert abs(static / measured["static"] - 1) < 0.2, (static, measured["static"])
    ratio = e["activations"] / measured["activations"][checkpointing]
    assert abs(ratio - 1) < 0.2, (e["activations"], measured["activations"][checkpointing], ratio)


def test_plan_command_on_a_concept_and_a_named_shape(tmp_path):
    out = tmp_path / "toy.json"
    result = CliRunner().invoke(
        app, ["plan", "--concept", "concepts/toy-robot", "--gpu-memory", "12", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["family"] == "sd" and len(report["rows"]) == 72 and report["current"]["optimizer"] == "adamw"
    assert report["denoiser_rows"] == 4  # params.yaml: batch 2 with prior preservation
    result = CliRunner().invoke(app, ["plan", "--shape", "sd15", "--resolution", "128", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert round(report["params_millions"]["unet"]) == 860 and "peak GiB" in result.output
    result = CliRunner().invoke(app, ["plan", "--shape", "sd9"])
    assert result.exit_code == 2 and "choose one of" in result.output


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd3", "flux.1-dev"])
def test_named_shapes_have_the_published_sizes(name):
    from components.plan_shapes import SHAPES

    with torch.device("meta"):
        denoiser, encoders, _ = SHAPES[name][1]()
    millions = sum(p.numel() for p in denoiser.parameters()) / 1e6
    # U-Nets of SD1.5 859.52 M and SDXL 2567.46 M; SD3-medium's MMDiT "2 B" (2028.3 M); FLUX.1-dev's 11901.41 M
    assert abs(millions - {"sd15": 859.5, "sdxl": 2567.5, "sd3": 2028.3, "flux.1-dev": 11901.4}[name]) < 1
    if "text_encoder_3" in encoders or name == "flux.1-dev":  # T5-XXL's encoder: 4.76 B
        t5 = encoders.get("text_encoder_3", encoders.get("text_encoder_2"))
        assert round(sum(p.numel() for p in t5.parameters()) / 1e9, 2) == 4.76
