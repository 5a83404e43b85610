"""The toy world's Chinese captions: written from the same ObjectSpec as the English ones, every
character in the BERT tokenizer's vocabulary (no [UNK]), and the language checks evaluate relies on."""

import random

import pytest
import yaml

from components.config import ConfigError
from components.languages import check_prompt_languages, prompt_language
from components.toyworld.chinese import (
    MAX_LENGTH,
    TAGS_ZH,
    chinese_caption,
    chinese_tokenizer,
    partial_chinese_caption,
)
from components.toyworld.domain import ObjectSpec, random_spec
from components.toyworld.experiment import REPO, asked_background


def test_caption_states_every_attribute_in_chinese():
    spec = ObjectSpec("triangle", "purple", "checkered", "large", "left", "green")
    assert chinese_caption(spec) == "一个大的紫色格子三角形,在左边,绿色背景"
    assert chinese_caption(spec, identifier="sks") == "一个大的sks三角形,在左边,绿色背景"
    plain = ObjectSpec("circle", "red", "plain", "small", "center", "blue")
    assert chinese_caption(plain, omit=frozenset({"size", "background"})) == "一个红色圆形"


def test_every_caption_and_sample_prompt_tokenizes_without_unk():
    tok = chinese_tokenizer()
    rng = random.Random(0)
    texts = []
    for _ in range(500):
        spec = random_spec(rng)
        texts += [chinese_caption(spec), partial_chinese_caption(spec, rng), chinese_caption(spec, "sks", tags=TAGS_ZH)]
    concept = yaml.safe_load((REPO / "concepts" / "toy-zh-triangle" / "concept.yaml").read_text())
    ev = concept["overrides"]["evaluate"]
    instance = f"{concept['instance_token']} {concept['class_noun']}"
    texts += [p.format(instance=instance, class_noun=concept["class_noun"]) for p in ev["prompts"]]
    texts += [p.format(class_noun=concept["class_noun"]) for p in ev["class_prompts"]]
    texts += ["sks三角形，蓝天,草地,4K照片,高清"]  # a Taiyi user's prompt, full-width comma too
    for text in texts:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids, text
        assert len(ids) <= MAX_LENGTH, text
    assert tok.tokenize("一个紫色三角形") == list("一个紫色三角形")  # one token per character, as Chinese BERTs


def test_prompt_language_and_the_refusal_names_the_key():
    assert prompt_language("a photo of a sks triangle") == "en"
    assert prompt_language("sks三角形,蓝天,草地,4K照片,高清") == "zh"
    check_prompt_languages("toyworld-clip-zh", ["zh"], ["三角形,高清"], "c")  # no error
    with pytest.raises(ConfigError) as err:
        check_prompt_languages("toyworld-clip", ["en"], ["a photo of a robot", "机器人,蓝天"], "toy-robot-zh")
    message = str(err.value)
    assert "evaluate.clip_model toyworld-clip reads English" in message
    assert "concept toy-robot-zh are Chinese" in message and "toyworld-clip-zh" in message


def test_asked_background_in_either_language():
    assert asked_background("a photo of a {instance} on a green background") == "green"
    assert asked_background("{instance},蓝色背景,4K照片") == "blue"
    assert asked_background("{instance},高清") is None
