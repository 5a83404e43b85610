"""evaluate: paired base-vs-adapter metrics, written with every setting; a zero adapter changes nothing."""

import json

import pytest
from PIL import Image

from components.config import TrainParams
from components.curate import CurateResult
from components.evaluate import evaluate
from components.families import family_of
from components.lora import add_lora, save_adapter
from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_train


@pytest.fixture
def trained(cfg, layout):
    for stage in (run_curate, run_caption, run_prior, run_train):
        stage(cfg, layout)
    return cfg, layout


def test_metrics_grid_and_report(trained):
    cfg, layout = trained
    result = run_evaluate(cfg, layout)
    out = layout.evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("clip_i", "clip_t", "diversity", "clip_i_gain", "clip_t_change", "prior_drift", "class_clip_i_gain"):
        assert isinstance(metrics["metrics"][key], float)
    assert metrics["settings"]["seeds"] == [0, 1] and metrics["settings"]["steps"] == 4
    assert metrics["clip_model"]["name"] == "tiny-clip" and len(metrics["clip_model"]["sha256"]) == 64
    assert set(metrics["formulas"]) == {
        "clip_t",
        "clip_i",
        "diversity",
        "prior_drift",
        "class_clip_i",
        "class_diversity",
    }
    # 2 concept prompts + 1 class prompt, 2 seeds each, for base and adapter
    assert len(list((out / "samples").glob("base-*.png"))) == 6
    assert len(list((out / "samples").glob("adapter-*.png"))) == 6
    grid = Image.open(out / "grid.png")
    # Rows: photos, base, adapter (96 px each under the captions); columns: 3 prompts x 2 seeds.
    assert grid.width == 60 + 6 * 96 and grid.height > 3 * 96
    report = (out / "report.md").read_text()
    assert "| clip_i |" in report and "Prior drift" in report
    assert result.metrics["prior_drift"] > 0, "a trained adapter moves class-prompt images at least a little"


def test_a_zero_adapter_scores_exactly_like_the_base(cfg, layout, tmp_path):
    from components.base_model import load_pipeline

    run_curate(cfg, layout)
    pipe = load_pipeline("tiny-sd")
    params = TrainParams(rank=4, alpha=4)
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, params)  # B = 0: the untrained adapter
    save_adapter(tmp_path / "zero", family, parts)
    instance = CurateResult.read(layout.curated / "manifest.json").accepted_images(layout.curated)

    result = evaluate("tiny-sd", tmp_path / "zero", instance, cfg.concept, cfg.params.evaluate, 64, tmp_path / "ev")

    assert result.metrics["prior_drift"] == pytest.approx(0.0, abs=1e-6)
    for key in ("clip_i", "clip_t", "diversity"):
        assert result.adapter[key] == pytest.approx(result.base[key], abs=1e-6)
