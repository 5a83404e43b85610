"""The GPU benchmark's plumbing at the smallest shapes on the CPU: it trains through conceptlab's own
code in both settings and, with --options, a row per memory option (those needing CUDA and bitsandbytes
recorded as skipped, with the reason, where they are missing), generates class priors, and writes its
JSON (the real run needs a GPU)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.gpu import OPTION_SETTINGS, SETTINGS, app


@pytest.mark.slow  # ~50 s of CPU: five model loads, four short trainings, priors
def test_smoke_run_writes_rows_for_each_setting(tmp_path):
    args = ["--smoke", "--models", "sdxl", "--options", "--out", str(tmp_path)]
    reference = os.environ.get("CONCEPTLAB_DIFFUSERS_SRC")  # a diffusers checkout: also run its script
    if reference:
        args += ["--reference", reference]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(next(Path(tmp_path).glob("gpu-*-smoke.json")).read_text())
    assert [r["setting"] for r in report["rows"]] == [*SETTINGS, *OPTION_SETTINGS]
    ran = [r for r in report["rows"] if "skipped" not in r]
    assert all(r["ours"]["s_per_step"] > 0 and r["resolution"] == 64 for r in ran)
    cuda_only = {"adamw_8bit", "nf4", "int8"}
    for r in report["rows"]:
        needs_cuda = bool(cuda_only & set(r["options"].values()))
        if needs_cuda and not (torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes")):
            assert "needs" in r["skipped"] and "train." in r["skipped"], r
        else:
            assert "skipped" not in r and r["ours"]["s_per_step"] > 0, r
    # the planner's estimate beside each row, skipped ones too (measured and ratio only where a GPU reports a peak)
    assert all(r["plan_gib"] > 0 and r["plan_s_per_step"] > 0 for r in report["rows"])
    plan = {r["setting"]: r["plan_gib"] for r in report["rows"]}
    assert plan["bf16+checkpointing"] < plan["bf16"]
    assert report["priors"]["sdxl"]["images_per_s"] > 0
    if reference:
        assert all(r["reference"]["s_per_step"] > 0 for r in report["rows"] if r["setting"] in SETTINGS)
    assert "speedup" in result.output and "plan GiB" in result.output


@pytest.mark.parametrize("name", ["sd15", "sdxl", "flux-dev"])
def test_shaped_models_have_the_published_sizes(name):
    """Denoiser parameter counts of the real architectures (on the meta device: nothing is allocated)."""
    from benchmarks.shaped import SHAPED

    pipe = SHAPED[name][0](device="meta")
    denoiser = pipe.transformer if name == "flux-dev" else pipe.unet
    millions = sum(p.numel() for p in denoiser.parameters()) / 1e6
    # SD1.5 U-Net 859.52 M; SDXL base 1.0 U-Net 2567.46 M; FLUX.1-dev transformer 11901.41 M
    expected = {"sd15": 859.5, "sdxl": 2567.5, "flux-dev": 11901.4}[name]
    assert abs(millions - expected) < 1, millions
