"""evaluate: paired base-vs-adapter metrics, written with every setting; a zero adapter changes nothing."""

import base64
import io
import json
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from components.clip_scores import ClipScorer, clip_i, clip_t, diversity, paired_drift
from components.config import TrainParams
from components.curate import CurateResult
from components.evaluate import evaluate, scored_prompt
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
    assert_metrics_follow_from_the_saved_samples(cfg, layout, metrics)
    assert_pair_scores_average_to_the_metrics(metrics)


def assert_pair_scores_average_to_the_metrics(metrics):
    """The per-(prompt, seed) scores the gate's intervals come from are the terms of the reported means."""
    concept = [s for s in metrics["samples"] if s["kind"] == "concept"]
    drift = [s["scores"]["prior_drift"] for s in metrics["samples"] if s["kind"] == "class"]
    assert len(concept) == 4 and len(drift) == 2  # 2 concept prompts and 1 class prompt, 2 seeds
    assert [(s["seed"]) for s in concept] == [0, 1, 0, 1]
    m, close = metrics["metrics"], {"abs": 1e-5}
    mean = {k: sum(s["scores"][k] for s in concept) / len(concept) for k in concept[0]["scores"]}
    assert mean["clip_i"] == pytest.approx(m["clip_i"], **close)
    assert mean["clip_t"] == pytest.approx(m["clip_t"], **close)
    assert mean["clip_i"] - mean["base_clip_i"] == pytest.approx(m["clip_i_gain"], **close)
    assert mean["clip_t"] - mean["base_clip_t"] == pytest.approx(m["clip_t_change"], **close)
    assert sum(drift) / len(drift) == pytest.approx(m["prior_drift"], **close)


class _ReportParser(HTMLParser):
    """Every number (data-* attributes) and every image (src) of report.html."""

    def __init__(self):
        super().__init__()
        self.numbers, self.images = {}, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for kind in ("data-metric", "data-base", "data-adapter"):
            if kind in attrs:
                self.numbers[(kind.removeprefix("data-"), attrs[kind])] = float(attrs["data-value"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_html_report_has_the_same_numbers_and_inline_images(trained, tmp_path):
    cfg, layout = trained
    run_evaluate(cfg, layout)
    out = layout.evaluation
    html = (out / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((out / "metrics.json").read_text())
    parser = _ReportParser()
    parser.feed(html)
    expected = {("metric", k): v for k, v in metrics["metrics"].items()}
    expected |= {(side, k): metrics[side][k] for side in ("base", "adapter") for k in metrics[side]}
    assert parser.numbers == expected, "exactly the values of metrics.json, none missing, none extra"
    for name, value in metrics["metrics"].items():
        assert f">{value:.4f}<" in html, f"{name} shown to 4 decimals"
    # The grid and every sample (base and adapter per prompt and seed), inline, decode as the saved PNGs.
    seeds, n = metrics["settings"]["seeds"], len(metrics["settings"]["generated_prompts"])
    saved = [out / "grid.png"] + [
        out / "samples" / f"{label}-{i:03d}-seed{seeds[i % len(seeds)]}.png"
        for i in range(n)
        for label in ("base", "adapter")
    ]
    assert len(parser.images) == len(saved) == 1 + 2 * 6
    for src, png in zip(parser.images, saved, strict=True):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data == png.read_bytes()
        assert Image.open(io.BytesIO(data)).size == Image.open(png).size
    assert str(out) not in html and str(layout.work_dir) not in html, "no machine-specific paths"
    # Byte-reproducible: the same inputs evaluated again (another folder) give the same file.
    again = run_evaluate(cfg, layout, out_dir=tmp_path / "again")
    assert again.metrics == json.loads((out / "metrics.json").read_text())["metrics"]
    assert (tmp_path / "again" / "report.html").read_bytes() == (out / "report.html").read_bytes()


def assert_metrics_follow_from_the_saved_samples(cfg, layout, metrics):
    """Recomputes the numbers from eval/samples with the same CLIP: the right images, texts and groups
    went into each formula (the formulas themselves: tests/code/test_clip_scores.py)."""
    ev, concept = cfg.params.evaluate, cfg.concept
    scorer = ClipScorer.load(metrics["clip_model"]["name"])
    n = len(ev.prompts) * len(ev.seeds)  # concept-prompt images come first, seeds within each prompt
    emb = {
        label: scorer.image_files(sorted((layout.evaluation / "samples").glob(f"{label}-*.png")))
        for label in ("base", "adapter")
    }
    real = scorer.image_files(CurateResult.read(layout.curated / "manifest.json").accepted_images(layout.curated))
    texts = [scored_prompt(p, concept) for p in ev.prompts for _ in ev.seeds]
    assert all(concept.instance_token not in t for t in texts)
    groups = [list(range(i, i + len(ev.seeds))) for i in range(0, n, len(ev.seeds))]
    m, close = metrics["metrics"], {"abs": 1e-5}
    assert m["clip_t"] == pytest.approx(clip_t(scorer.texts(texts), emb["adapter"][:n]), **close)
    assert m["clip_i"] == pytest.approx(clip_i(emb["adapter"][:n], real), **close)
    assert m["diversity"] == pytest.approx(diversity(emb["adapter"][:n], groups), **close)
    assert m["clip_i_gain"] == pytest.approx(m["clip_i"] - clip_i(emb["base"][:n], real), **close)
    assert m["prior_drift"] == pytest.approx(paired_drift(emb["base"][n:], emb["adapter"][n:]), **close)
    with_identifier = [p.format(instance=concept.instance_phrase) for p in ev.prompts for _ in ev.seeds]
    assert m["clip_t"] != pytest.approx(clip_t(scorer.texts(with_identifier), emb["adapter"][:n]), **close), (
        "the check tells the prompt without the identifier from the one with it"
    )


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


def test_base_images_are_drawn_once_and_scored_the_same_when_read_back(cfg, layout, tmp_path):
    from components.base_model import load_pipeline

    run_curate(cfg, layout)
    pipe = load_pipeline("tiny-sd")
    family = family_of(pipe)
    parts = family.parts(pipe)
    add_lora(family, parts, TrainParams(rank=4, alpha=4))
    for module in parts.denoiser.modules():  # a non-zero adapter: base and adapter images differ
        if hasattr(module, "lora_B"):
            for weight in module.lora_B.values():
                torch.nn.init.normal_(weight.weight, std=0.05, generator=torch.Generator().manual_seed(0))
    save_adapter(tmp_path / "adapter", family, parts)
    instance = CurateResult.read(layout.curated / "manifest.json").accepted_images(layout.curated)
    root = tmp_path / "base-samples"

    def run(name, params):
        args = (instance, cfg.concept, params, 64, tmp_path / name)
        return evaluate("tiny-sd", tmp_path / "adapter", *args, base_samples_root=root)

    drawn = run("first", cfg.params.evaluate)
    read_back = run("second", cfg.params.evaluate)
    other_steps = run("third", cfg.params.evaluate.model_copy(update={"steps": 3}))

    assert [drawn.settings["base_images_reused"], read_back.settings["base_images_reused"]] == [False, True]
    assert read_back.base == drawn.base and read_back.metrics == drawn.metrics and drawn.metrics["prior_drift"] > 0
    assert read_back.samples == drawn.samples
    assert not other_steps.settings["base_images_reused"], "another sampler setting draws (and keeps) its own"
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 2
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no staging folder is left behind"
