"""train's speed options on the tiny real models: each trains a few steps and stays close to the default's
losses, a run with them on resumes bit for bit, compile 'auto' follows the measurements, and the config
refuses bad values naming the key. torch.compile itself is measured by benchmarks/train_speed.py, not
trained here: compiling a U-Net takes minutes on 2 CPU cores. The file: ~40 s of CPU time (201 s of wall on
the shared 2-core machine at load average 10)."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch
from safetensors.torch import load_file

from components.config import ConfigError, load_config
from components.pipeline import resolution, run_caption, run_curate
from components.train import load_train_data, train
from components.train_speedups import adamw_kwargs, use_compile

OPTIONS = {
    "fused": {"optimizer_impl": "fused"},
    "foreach": {"optimizer_impl": "foreach"},
    "channels_last": {"channels_last": True},
    "classic_attention": {"attention": "classic"},
    "one_thread": {"num_threads": 1, "interop_threads": 1},
}


@pytest.fixture
def captioned(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    return cfg, layout


def run(cfg, layout, out, resume="no", **options):
    params = cfg.params.train.model_copy(
        update={"max_steps": 4, "with_prior_preservation": False, "checkpoint_every": 2, **options}
    )
    data = load_train_data("tiny-sd", resolution(cfg), layout.curated, layout.captions, None)
    return train(data, params, out / "adapter", out / "checkpoints", resume=resume)


def losses(out) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(out / "adapter" / "loss.csv"))]


def test_each_speed_option_trains_like_the_default(captioned, tmp_path):
    """Six four-step runs on tiny-sd."""
    cfg, layout = captioned
    threads = torch.get_num_threads()
    try:
        run(cfg, layout, tmp_path / "default")
        for name, options in OPTIONS.items():
            run(cfg, layout, tmp_path / name, **options)
            # the same draws, other kernels: the same losses up to rounding
            assert losses(tmp_path / name) == pytest.approx(losses(tmp_path / "default"), rel=1e-3), name
    finally:
        torch.set_num_threads(threads)


def test_resume_with_the_speed_options_on_is_bit_exact(captioned, tmp_path):
    """The options that change kernels, all on; interrupted after step 2 and resumed."""
    cfg, layout = captioned
    options = {"optimizer_impl": "fused", "channels_last": True, "attention": "classic"}
    run(cfg, layout, tmp_path / "run", **options)
    uninterrupted = load_file(str(tmp_path / "run" / "adapter" / "pytorch_lora_weights.safetensors"))
    shutil.rmtree(tmp_path / "run" / "adapter")
    result = run(cfg, layout, tmp_path / "run", resume="yes", **options)
    assert result.resumed_from_step == 2
    resumed = load_file(str(tmp_path / "run" / "adapter" / "pytorch_lora_weights.safetensors"))
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=0)


def test_compile_auto_and_optimizer_impl(cfg):
    train_params = cfg.params.train
    cpu = torch.device("cpu")
    assert use_compile(train_params.model_copy(update={"compile": True}), cpu)
    assert not use_compile(train_params.model_copy(update={"compile": False}), cpu)
    # auto: on from the measured CPU break-even (components/train_speedups.py), off for a run of usual length
    assert not use_compile(train_params.model_copy(update={"compile": "auto", "max_steps": 1000}), cpu)
    assert use_compile(train_params.model_copy(update={"compile": "auto", "max_steps": 5000}), cpu)
    assert adamw_kwargs(train_params.model_copy(update={"optimizer_impl": "fused"})) == {"fused": True}
    assert adamw_kwargs(train_params) == {}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("compile", "sometimes"),
        ("optimizer_impl", "fast"),
        ("channels_last", "maybe"),
        ("attention", "flash"),
        ("num_threads", 0),
        ("interop_threads", "many"),
    ],
)
def test_config_refuses_bad_speed_option_values_naming_the_key(concept_dir, tmp_path, key, value):
    params = tmp_path / "bad.yaml"
    params.write_text(f"train: {{{key}: {value}}}\n")
    with pytest.raises(ConfigError, match=f"train.{key}"):
        load_config(concept_dir / "concept.yaml", params)
