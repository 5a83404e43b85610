"""train's memory and loss options on the tiny real models: each CPU option trains and is recorded in the
adapter's train_config.json, changes what it should (and offloading changes nothing), and the CUDA-only
options (8-bit AdamW, NF4/int8 base) are refused on a CPU with an error naming the key; on a CUDA machine
with the `gpu` extra they train a few steps here (elsewhere they are skipped, saying why)."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
import torch

from components.config import ConfigError
from components.pipeline import resolution, run_caption, run_curate
from components.train import load_train_data, train

HAS_CUDA = torch.cuda.is_available()
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_cuda_and_bnb = pytest.mark.skipif(
    not (HAS_CUDA and HAS_BNB),
    reason="8-bit AdamW and the NF4/int8 base run on bitsandbytes, which needs a CUDA GPU and the gpu extra "
    "(`uv sync --frozen --extra gpu`); benchmarks/gpu.py --options measures them on a GPU",
)


@pytest.fixture
def captioned(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    return cfg, layout


def run(cfg, layout, tmp_path, name, model="tiny-sd", **options):
    """Three steps without prior preservation on ``model``, with these train options; (result, folder)."""
    params = cfg.params.train.model_copy(
        update={"max_steps": 3, "with_prior_preservation": False, "checkpoint_every": 100, **options}
    )
    data = load_train_data(model, resolution(cfg), layout.curated, layout.captions, None)
    out = tmp_path / name
    return train(data, params, out / "adapter", out / "checkpoints"), out / "adapter"


def losses(adapter) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(adapter / "loss.csv"))]


def config(adapter) -> dict:
    return json.loads((adapter / "train_config.json").read_text())


def test_unet_loss_options_and_offload_modes(captioned, tmp_path):
    """~25 s: five three-step runs on tiny-sd."""
    cfg, layout = captioned
    base, base_dir = run(cfg, layout, tmp_path, "cpu")  # the defaults: offload_frozen cpu, no loss options
    assert config(base_dir)["memory_options"] == {
        "optimizer": "adamw",
        "base_quantization": "none",
        "offload_frozen": "cpu",
        "gradient_checkpointing": False,
        "mixed_precision": "no",
    }
    assert config(base_dir)["loss_options"]["prediction"] == "epsilon"
    # Where the frozen VAE and text encoder go after caching changes nothing the loop computes ('free'
    # deletes them, so nothing reads them), nor the checkpoint's inputs.
    for mode in ("free", "none"):
        result, _ = run(cfg, layout, tmp_path, mode, offload_frozen=mode)
        assert result.adapter_sha256 == base.adapter_sha256, mode
        assert result.inputs_sha256 == base.inputs_sha256, mode

    # min-SNR-gamma with a tiny gamma weighs every row far below 1 (at most gamma / snr(999) ~ 0.02 here):
    # the first step (LoRA B = 0: the same prediction, noise and timestep as the default run) loses as much.
    _, snr_dir = run(cfg, layout, tmp_path, "snr", snr_gamma=1e-4)
    assert losses(snr_dir)[0] < 0.05 * losses(base_dir)[0]
    assert config(snr_dir)["loss_options"]["snr_gamma"] == 1e-4

    _, offset_dir = run(cfg, layout, tmp_path, "offset", noise_offset=0.1)
    assert losses(offset_dir)[0] != losses(base_dir)[0], "offset noise changes the first step's target"
    recorded = config(offset_dir)["loss_options"]
    assert recorded["noise_offset"] == 0.1 and recorded["family"] == "sd" and recorded["snr_gamma"] is None


def test_flow_timestep_densities_and_shift(captioned, tmp_path):
    """~30 s: three three-step runs on tiny-flux."""
    cfg, layout = captioned
    _, auto_dir = run(cfg, layout, tmp_path, "auto", model="tiny-flux")
    first = {"auto": losses(auto_dir)[0]}
    for name, options in {
        "mode": {"timestep_density": "mode", "timestep_mode_scale": 1.29},
        "uniform-shift": {"timestep_density": "uniform", "timestep_shift": 3.0},
    }.items():
        result, adapter = run(cfg, layout, tmp_path, name, model="tiny-flux", **options)
        assert torch.isfinite(torch.tensor(result.final_loss))
        first[name] = losses(adapter)[0]
        recorded = config(adapter)["loss_options"]
        assert recorded["family"] == "flux" and recorded["prediction"] == "flow_velocity"
        assert {k: recorded[k] for k in options} == options
    # the first step sees the same image and noise at another noise level
    assert len(set(first.values())) == 3, first
    assert config(auto_dir)["loss_options"]["timestep_density"] == "auto"


@pytest.mark.parametrize(
    ("model", "options", "key"),
    [
        ("tiny-flux", {"snr_gamma": 5.0}, "snr_gamma"),
        ("tiny-flux", {"noise_offset": 0.05}, "noise_offset"),
        ("tiny-sd", {"timestep_density": "mode"}, "timestep_density"),
        ("tiny-sd", {"timestep_shift": 3.0}, "timestep_shift"),
    ],
)
def test_an_option_the_family_cannot_use_is_refused_naming_it(captioned, tmp_path, model, options, key):
    cfg, layout = captioned
    with pytest.raises(ConfigError, match=rf"train\.{key}"):
        run(cfg, layout, tmp_path, key, model=model, **options)
    assert not (tmp_path / key / "adapter").exists()


def test_caching_brings_one_frozen_module_at_a_time(captioned, monkeypatch):
    """~10 s: tiny-flux's cache (CLIP, T5, VAE) built as train builds it. Under offload_frozen cpu each frozen
    module is brought to the device alone, just before it runs, and all are back on the CPU after; the
    cached tensors are those of 'none' (everything on the device at once). On a CPU the device is the CPU,
    so where the weights are is checked only on CUDA; here the placement's own record is checked."""
    from components import train as train_module
    from components.base_model import resolve_model
    from components.families import family_for
    from components.train_memory import OneOnDevice

    cfg, layout = captioned
    folder = resolve_model("tiny-flux")
    family = family_for(folder)
    data = load_train_data("tiny-flux", resolution(cfg), layout.curated, layout.captions, None)
    device = torch.device("cuda" if HAS_CUDA else "cpu")
    seen = []  # (what ran or was brought, what the placement had on the device, modules whose weights were there)

    class Recorded(OneOnDevice):
        def __init__(self, modules, device, hooked):
            super().__init__(modules, device, hooked)
            for name in hooked:  # after the placement's own hook: sees the state the module runs in
                modules[name].register_forward_pre_hook(lambda m, a, name=name: self.record(name))

        def bring(self, name):
            super().bring(name)
            if name == "vae":  # brought by name; its encode() is not forward()
                self.record(name)

        def record(self, name):
            on_gpu = sorted(n for n, m in self.modules.items() if next(m.parameters()).device.type == "cuda")
            seen.append((name, self.on_device, on_gpu))

    monkeypatch.setattr(train_module, "OneOnDevice", Recorded)
    caches = {}
    for mode in ("none", "cpu"):
        params = cfg.params.train.model_copy(update={"with_prior_preservation": False, "offload_frozen": mode})
        parts = family.parts(family.load_pipeline(folder, without_denoiser=True))
        caches[mode] = train_module._build_cache(family, parts, data, params, device, torch.float32)
        if mode == "cpu":
            assert all(next(m.parameters()).device.type == "cpu" for m in parts.modules())

    assert [name for name, _, _ in seen] == ["vae", "text_encoder", "text_encoder_2"]  # 'none' made no placement
    for name, on_device, on_gpu in seen:
        assert on_device == name
        if HAS_CUDA:
            assert on_gpu == [name], f"{name} ran beside {on_gpu}"
    a, b = caches["none"], caches["cpu"]
    assert all(torch.equal(x, y) for x, y in zip(a.instance.latents, b.instance.latents, strict=True))
    assert a.prompt_embeddings.keys() == b.prompt_embeddings.keys()
    assert all(torch.equal(a.prompt_embeddings[k], b.prompt_embeddings[k]) for k in a.prompt_embeddings)


@pytest.mark.skipif(HAS_CUDA and HAS_BNB, reason="this machine has CUDA and bitsandbytes: the options run")
@pytest.mark.parametrize(
    ("key", "value"), [("optimizer", "adamw_8bit"), ("base_quantization", "nf4"), ("base_quantization", "int8")]
)
def test_cuda_only_options_are_refused_before_loading(captioned, tmp_path, key, value):
    cfg, layout = captioned
    with pytest.raises(ConfigError, match=rf"train\.{key} '{value}' needs .*(CUDA GPU|--extra gpu)"):
        run(cfg, layout, tmp_path, value, **{key: value})


@needs_cuda_and_bnb
@pytest.mark.parametrize(
    ("model", "options", "layer"),
    [
        ("tiny-sd", {"optimizer": "adamw_8bit"}, None),
        ("tiny-sd", {"base_quantization": "nf4", "mixed_precision": "bf16"}, "Linear4bit"),
        ("tiny-flux", {"base_quantization": "nf4", "mixed_precision": "bf16"}, "Linear4bit"),
        ("tiny-sd", {"base_quantization": "int8", "mixed_precision": "bf16"}, "Linear8bitLt"),
    ],
)
def test_cuda_memory_options_train(captioned, tmp_path, model, options, layer):
    cfg, layout = captioned
    seen = set()
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.add(type(module).__name__) if torch.is_grad_enabled() else None
    )
    try:
        result, adapter = run(cfg, layout, tmp_path, "gpu", model=model, **options)
    finally:
        hook.remove()
    assert torch.isfinite(torch.tensor(result.final_loss))
    assert all(config(adapter)["memory_options"][k] == v for k, v in options.items())
    if layer is not None:
        assert layer in seen, f"the denoiser ran {layer} layers: {sorted(seen)}"
