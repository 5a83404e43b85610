"""The Taiyi-layout toy builder at smoke size: it trains the BERT-conditioned SD and the Chinese CLIP on
the Chinese captions (reusing toyworld-sd's VAE), saves them in their libraries' formats, and they
load through the project's own paths: load_pipeline, the sd family, ClipScorer, the attribute readout."""

import json
import shutil
from pathlib import Path

import pytest

from components.toyworld.build_taiyi import CLIP_ZH_NAME, TAIYI_NAME, TAIYI_PRESETS, build_taiyi_world

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyworld-taiyi")
    shutil.copy(MODELS / "toyworld-build.json", out / "toyworld-build.json")  # the taiyi section is added to it
    section = build_taiyi_world(
        out, TAIYI_PRESETS["smoke"], MODELS / "toyworld-sd" / "vae", MODELS / "toyworld-clip", log=lambda _: None
    )
    return out, section


def test_taiyi_world_loads_as_a_bert_conditioned_sd_pipeline(built):
    from transformers import BertModel, BertTokenizer

    from components.base_model import load_pipeline, native_resolution
    from components.families import family_of

    out, _ = built
    assert native_resolution(out / TAIYI_NAME) == 32
    pipe = load_pipeline(str(out / TAIYI_NAME))
    assert isinstance(pipe.text_encoder, BertModel) and isinstance(pipe.tokenizer, BertTokenizer)
    assert family_of(pipe).name == "sd"  # trainable by the project's sd family, as tiny-taiyi is
    image = pipe("一个紫色格子三角形,绿色背景", num_inference_steps=2, height=32, width=32).images[0]
    assert image.size == (32, 32)


def test_chinese_clip_reads_chinese_and_reads_attributes_in_chinese(built):
    from components.clip_scores import ClipScorer
    from components.toyworld.attributes import caption_for, predict_attribute
    from components.toyworld.chinese import chinese_caption
    from components.toyworld.data import to_images, world_data

    out, _ = built
    scorer = ClipScorer.load(str(out / CLIP_ZH_NAME))
    assert scorer.languages == {"zh"}
    assert caption_for(scorer) is chinese_caption
    data = world_data(4, seed=5)
    emb = scorer.images(to_images(data.batch(list(range(4)))))
    assert emb.shape == (4, 64)
    assert all(v in {"small", "large"} for v in predict_attribute(scorer, emb, data.specs, "size"))
    english = ClipScorer.load(str(MODELS / "toyworld-clip"))
    assert english.languages == {"en"}  # inferred from its tokenizer vocabulary


def test_build_report_gets_a_taiyi_section_and_keeps_the_sd_one(built):
    out, section = built
    saved = json.loads((out / "toyworld-build.json").read_text())
    assert saved["bases"][TAIYI_NAME]["command"] == "conceptlab toyworld build --base taiyi --seed 0"
    assert set(saved["bases"][TAIYI_NAME]["weights_bytes"]) == {TAIYI_NAME, CLIP_ZH_NAME}
    assert "clip_zero_shot_accuracy" in saved["metrics"], "toyworld-sd's own section is untouched"
    card = (out / "README.md").read_text()
    assert "toyworld-taiyi" in card and "| colour | 颜色 |" in card
