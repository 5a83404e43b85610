"""The flow-matching families (Flux.1 dev/schnell, SD3/3.5) through conceptlab's own stages, on their tiny
random-weight models (plumbing, not learning): a few training steps give an adapter that (a) loads with the
family's pipeline ``load_lora_weights``, (b) changes its output, (c) reloads to exactly the in-memory result,
(d) evaluates, registers and predicts through the MLflow pyfunc; bf16 autocast and gradient checkpointing
run on the CPU; Flux's kohya export names its modules as kohya does and loads in diffusers' kohya reader."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from components.base_model import load_pipeline, resolve_model
from components.config import TrainParams
from components.families import family_for, family_of
from components.lora import add_lora, save_adapter
from components.pipeline import run_caption, run_curate, run_prior, run_train
from tests.model.family_checks import trained_adapter_loads_evaluates_registers_and_predicts

# tiny model -> (family name, pipeline class, text encoders that may carry LoRA)
FLOW = {
    "tiny-flux": ("flux", "FluxPipeline", ("text_encoder",)),
    "tiny-flux-schnell": ("flux", "FluxPipeline", ("text_encoder",)),
    "tiny-sd3": ("sd3", "StableDiffusion3Pipeline", ("text_encoder", "text_encoder_2")),
}
FAST = ["tiny-flux", "tiny-sd3"]
PROMPT = "a photo of sks robot"


def render(pipe) -> np.ndarray:
    return pipe(
        PROMPT, num_inference_steps=2, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images


def on_model(cfg, model: str, **train_update):
    concept = cfg.concept.model_copy(update={"base_model": model})
    train = cfg.params.train.model_copy(update={"max_steps": 3, "checkpoint_every": 100, **train_update})
    params = cfg.params.model_copy(update={"train": train})
    return cfg.model_copy(update={"concept": concept, "params": params})


@pytest.mark.parametrize("model", FLOW)
def test_the_folder_names_its_family_and_pipeline(model):
    family = family_for(resolve_model(model))
    assert (family.name, family.pipeline) == FLOW[model][:2]
    assert family.native_resolution(resolve_model(model)) == 64
    pipe = load_pipeline(model)
    assert type(pipe).__name__ == family.pipeline and family_of(pipe) is family


@pytest.mark.parametrize("model", FAST)
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

    fresh = family.pipeline_class().from_pretrained(resolve_model(model))
    fresh.load_lora_weights(tmp_path)
    reloaded = render(fresh)

    assert np.abs(in_memory - base).max() > 1e-3, "the adapter changes the output"
    assert np.abs(reloaded - in_memory).max() < 1e-5, "reloaded adapter == in-memory adapter"
    carriers = {n for n, m in parts.adaptable().items() if getattr(m, "peft_config", None)}
    assert carriers == {"transformer", *FLOW[model][2]}, "T5 stays frozen: the pipelines save no T5 adapter"
    for name in carriers:
        assert getattr(fresh, name).peft_config["default_0"].lora_alpha == (16.0 if name == "transformer" else 8.0)
    targets = set(fresh.transformer.peft_config["default_0"].target_modules)
    assert {"to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "to_add_out"} <= targets


@pytest.mark.parametrize("model", FAST)
def test_trained_adapter_loads_evaluates_registers_and_predicts(model, cfg, layout):
    trained_adapter_loads_evaluates_registers_and_predicts(on_model(cfg, model), layout, render, PROMPT)


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-flux-schnell", "tiny-sd3"])
def test_bf16_autocast_and_gradient_checkpointing_train_on_the_cpu(model, cfg, layout):
    cfg = on_model(cfg, model, mixed_precision="bf16", gradient_checkpointing=True, max_steps=2)
    for stage in (run_curate, run_caption, run_prior):
        stage(cfg, layout)
    result = run_train(cfg, layout)
    assert np.isfinite(result.final_loss)


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-flux-schnell", "tiny-sd3"])
def test_the_training_prediction_is_the_pipelines_own_denoising_step(model):
    """What training asks of the transformer (cached prompt conditioning, packing, position ids, timestep
    scale, the dev guidance value) is what the pipeline asks when it generates: one Euler step from pure
    noise (s = 1) with the pipeline lands where the family's velocity says, noise - v."""
    from components.families import flow_matching as fm

    pipe = load_pipeline(model)
    family = family_of(pipe)
    parts = family.parts(pipe)
    flux = family.name == "flux"
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prompt = family.encode_prompts(parts, family.tokenize(parts, [PROMPT]))
        v = family.predict(parts, noise, torch.tensor([1.0 * family.timestep_scale]), prompt, {})
        out = pipe(
            PROMPT,
            num_inference_steps=1,
            guidance_scale=fm.FLUX_TRAIN_GUIDANCE if flux else 1.0,  # SD3: 1.0 turns classifier-free guidance off
            latents=fm.pack_latents(noise) if flux else noise,
            height=64,
            width=64,
            output_type="latent",
        ).images
    stepped = fm.unpack_latents(out, 8, 8) if flux else out
    torch.testing.assert_close(stepped, noise - v, rtol=0, atol=1e-5)


KOHYA_FLUX_KEY = re.compile(
    r"^lora_unet_(double_blocks_\d+_(img|txt)_(attn_qkv|attn_proj|mlp_0|mlp_2|mod_lin)"
    r"|single_blocks_\d+_(linear1|linear2|modulation_lin))\.(lora_down\.weight|lora_up\.weight|alpha)$"
)


def _delta(down: torch.Tensor, up: torch.Tensor, alpha: float) -> torch.Tensor:
    return up @ down * (alpha / down.shape[0])


def test_flux_kohya_export_names_bfl_modules_and_keeps_every_weight_delta(tmp_path):
    """kohya/ComfyUI name Flux LoRA modules after BFL's fused layers (double_blocks_N_img_attn_qkv, single_blocks_N
    _linear1, ...). Every weight delta of the export equals the adapter's, and diffusers' own kohya reader turns
    the export back into the same q/k/v deltas (its single-block reader assumes FLUX.1's real width, 3072, so it
    reads the double blocks here; the single blocks are checked by the delta arithmetic)."""
    from diffusers import FluxPipeline
    from safetensors.torch import load_file, save_file

    from components.io import KOHYA_FILE
    from components.lora import adapted, lora_state

    pipe = load_pipeline("tiny-flux")
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, TrainParams(rank=4, alpha=12.0))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in parts.denoiser.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    save_adapter(tmp_path, family, parts)
    kohya = load_file(str(tmp_path / KOHYA_FILE))
    peft = lora_state(adapted(parts))
    ours = {
        k.removeprefix("transformer.").removesuffix(".lora_A.weight"): k for k in peft if k.endswith("lora_A.weight")
    }

    assert not [k for k in kohya if not KOHYA_FLUX_KEY.match(k)]
    modules = {k.rsplit(".", 2)[0].removeprefix("lora_unet_") for k in kohya if k.endswith("lora_down.weight")}
    assert modules == {
        "double_blocks_0_img_attn_qkv", "double_blocks_0_txt_attn_qkv",
        "double_blocks_0_img_attn_proj", "double_blocks_0_txt_attn_proj",
        "single_blocks_0_linear1", "single_blocks_1_linear1",
    }  # fmt: skip

    def adapter_delta(path: str) -> torch.Tensor:
        a_key = ours[path]
        return _delta(peft[a_key], peft[a_key.replace("lora_A", "lora_B")], 12.0)

    def export_deltas(module: str, members: list[str], dims: list[int]) -> dict[str, torch.Tensor]:
        k = f"lora_unet_{module}"
        full = _delta(kohya[k + ".lora_down.weight"], kohya[k + ".lora_up.weight"], kohya[k + ".alpha"].item())
        return dict(zip(members, torch.split(full, dims), strict=True))

    width = 32
    for path, delta in {
        **export_deltas("double_blocks_0_img_attn_qkv", ["to_q", "to_k", "to_v"], [width] * 3),
        **export_deltas("double_blocks_0_txt_attn_qkv", ["add_q_proj", "add_k_proj", "add_v_proj"], [width] * 3),
        **export_deltas("double_blocks_0_img_attn_proj", ["to_out.0"], [width]),
    }.items():
        torch.testing.assert_close(delta, adapter_delta(f"transformer_blocks.0.attn.{path}"), rtol=0, atol=1e-6)
    for i in (0, 1):
        single = export_deltas(f"single_blocks_{i}_linear1", ["to_q", "to_k", "to_v", "mlp"], [width] * 3 + [4 * width])
        assert single.pop("mlp").abs().max() == 0, "no MLP adapter: its rows are zero"
        for member, delta in single.items():
            torch.testing.assert_close(delta, adapter_delta(f"single_transformer_blocks.{i}.attn.{member}"))

    save_file({k: v for k, v in kohya.items() if "double_blocks" in k}, str(tmp_path / "double.safetensors"))
    read = FluxPipeline.lora_state_dict(tmp_path / "double.safetensors")
    read = read[0] if isinstance(read, tuple) else read
    for path in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
        key = f"transformer.transformer_blocks.0.attn.{path}"
        delta = _delta(
            read[key + ".lora_A.weight"], read[key + ".lora_B.weight"], read[key + ".lora_A.weight"].shape[0]
        )
        torch.testing.assert_close(delta, adapter_delta(f"transformer_blocks.0.attn.{path}"), rtol=0, atol=1e-6)
