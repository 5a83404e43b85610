"""evaluate takes its text tower from the concept's language: a Chinese concept (Taiyi layout, prompts
as Taiyi users write them) scored by an English-only CLIP is refused before any image is made."""

import pytest
import yaml

from components.config import ConfigError, load_config
from components.layout import ConceptLayout
from components.pipeline import run_caption, run_curate, run_evaluate, run_prior, run_train

CHINESE = {
    "caption": {"template": "{token}{class_noun},蓝天,草地,4K照片,高清"},
    "prior": {"prompt": "一个{class_noun},高清"},
    "evaluate": {"prompts": ["{instance},蓝天,草地,4K照片,高清"], "class_prompts": ["一个{class_noun}"]},
}


def test_chinese_taiyi_concept_with_english_clip_is_refused(concept_dir, params_file, tmp_path):
    concept = yaml.safe_load((concept_dir / "concept.yaml").read_text())
    concept |= {"base_model": "tiny-taiyi", "class_noun": "机器人", "overrides": CHINESE}
    (concept_dir / "concept.yaml").write_text(yaml.safe_dump(concept, allow_unicode=True))
    cfg = load_config(concept_dir / "concept.yaml", params_file)
    layout = ConceptLayout(tmp_path / "work", cfg.concept.name)
    for stage in (run_curate, run_caption, run_prior, run_train):  # as a new user runs it: all fine so far
        stage(cfg, layout)
    with pytest.raises(ConfigError) as err:
        run_evaluate(cfg, layout)
    message = str(err.value)
    assert (
        f"evaluate.clip_model tiny-clip reads English; the prompts of concept {cfg.concept.name} are Chinese" in message
    )
    assert "Set evaluate.clip_model to a Chinese-reading CLIP" in message
    assert not layout.evaluation.exists(), "refused before writing any metric"
