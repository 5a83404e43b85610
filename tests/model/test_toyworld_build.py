"""The toy-world builder end to end at smoke size: it trains all three models, saves them in their
libraries' formats, and they load through the normal from_pretrained / local-dir paths."""

import json

import pytest

from components.toyworld.build import CLIP_NAME, PRESETS, SD_NAME, build_world


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyworld")
    return out, build_world(out, PRESETS["smoke"], log=lambda _: None)


def test_build_writes_loadable_models_and_a_card(built):
    from components.base_model import load_pipeline, native_resolution
    from components.clip_scores import ClipScorer

    out, report = built
    assert native_resolution(out / SD_NAME) == 32
    pipe = load_pipeline(str(out / SD_NAME))
    image = pipe("a photo of a red star", num_inference_steps=2, height=32, width=32, output_type="pil").images[0]
    assert image.size == (32, 32)
    scorer = ClipScorer.load(str(out / CLIP_NAME))
    assert scorer.texts(["a photo of a red star"]).shape == (1, 64)
    saved = json.loads((out / "toyworld-build.json").read_text())
    assert saved["command"] == "conceptlab toyworld build --seed 0"
    assert set(saved["metrics"]["clip_zero_shot_accuracy"]) == {
        "colour",
        "shape",
        "pattern",
        "size",
        "position",
        "background",
    }
    assert "toyworld-sd" in (out / "README.md").read_text()


def test_held_out_combinations_are_recorded(built):
    _, report = built
    assert ("orange", "dotted", "star") in {tuple(c) for c in report["held_out_combinations"]}
