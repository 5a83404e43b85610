"""The toy world captioned in Chinese, for the Taiyi-layout base (a BERT text encoder with a Chinese
character vocabulary): a fixed dictionary of the domain's words, captions written from the same
ObjectSpec as the English ones, and the tokenizer that covers every character they use.

"一个大的紫色格子三角形,在左边,绿色背景": commas between phrases, as Taiyi users write prompts.
"""

from __future__ import annotations

import random
from dataclasses import replace

from components.toyworld.domain import OMITTABLE, ObjectSpec

COLOURS_ZH = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "purple": "紫色",
    "orange": "橙色",
    "white": "白色",
    "black": "黑色",
}
# 波点 (polka dots), not 圆点: 圆 would then be shared with 圆形 (circle) one character apart.
SHAPES_ZH = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "diamond": "菱形",
    "star": "星形",
    "cross": "十字形",
}
PATTERNS_ZH = {"plain": "", "striped": "条纹", "dotted": "波点", "checkered": "格子"}
SIZES_ZH = {"small": "小的", "large": "大的"}
POSITIONS_ZH = {"left": "在左边", "center": "", "right": "在右边"}
# Words Taiyi users append to every prompt; partial captions carry them at random, so the base
# model learns they change nothing in this world.
TAGS_ZH = ("高清", "4K照片", "照片")
# Words the sample concepts' prompts use beyond the captions (their characters must be in the vocab).
PROMPT_WORDS_ZH = ("一张", "蓝天", "草地", "图片", "的")
MAX_LENGTH = 32  # tokens, [CLS] and [SEP] included; the longest caption has 25


def background_phrase(colour: str) -> str:
    return f"{COLOURS_ZH[colour]}背景"


def chinese_caption(
    spec: ObjectSpec, identifier: str | None = None, omit: frozenset[str] = frozenset(), tags: tuple[str, ...] = ()
) -> str:
    """'一个大的紫色格子三角形,在左边,绿色背景'; ``omit`` and ``identifier`` as ObjectSpec.caption."""
    size = "" if "size" in omit else SIZES_ZH[spec.size]
    colour = "" if "colour" in omit else COLOURS_ZH[spec.colour]
    pattern = "" if "pattern" in omit else PATTERNS_ZH[spec.pattern]
    name = f"{identifier}{SHAPES_ZH[spec.shape]}" if identifier else f"{colour}{pattern}{SHAPES_ZH[spec.shape]}"
    phrases = [f"一个{size}{name}"]
    if "position" not in omit and POSITIONS_ZH[spec.position]:
        phrases.append(POSITIONS_ZH[spec.position])
    if "background" not in omit:
        phrases.append(background_phrase(spec.background))
    return ",".join(phrases + list(tags))


def partial_chinese_caption(spec: ObjectSpec, rng: random.Random, p_omit: float = 0.3, p_tag: float = 0.3) -> str:
    """Each attribute left out at random (as domain.partial_caption), a Taiyi-style tag added at random."""
    omit = frozenset(a for a in OMITTABLE if rng.random() < p_omit)
    tags = (rng.choice(TAGS_ZH),) if rng.random() < p_tag else ()
    return chinese_caption(spec, omit=omit, tags=tags)


def chinese_world(data, seed: int):
    """``data`` (a WorldData) with its captions in Chinese: the same images and specs."""
    rng = random.Random(seed + 1)
    return replace(
        data,
        captions=[chinese_caption(s) for s in data.specs],
        partial_captions=[partial_chinese_caption(s, rng) for s in data.specs],
    )


def domain_characters() -> list[str]:
    """Every character a Chinese toy-world caption or sample prompt can contain, in a fixed order."""
    words = [
        *COLOURS_ZH.values(),
        *SHAPES_ZH.values(),
        *PATTERNS_ZH.values(),
        *SIZES_ZH.values(),
        *POSITIONS_ZH.values(),
        "一个",
        "背景",
        *TAGS_ZH,
        *PROMPT_WORDS_ZH,
    ]
    return list(dict.fromkeys(ch for word in words for ch in word if not ch.isascii()))


def chinese_vocab() -> dict[str, int]:
    """chinese_bert_vocab() (specials, ASCII word pieces, the first 3,000 CJK code points) with the
    domain's characters it lacks appended: one WordPiece entry per character, as Chinese BERTs have."""
    from components.tiny_models import chinese_bert_vocab

    tokens = list(chinese_bert_vocab()) + [",", "，"] + domain_characters()
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def chinese_tokenizer(model_max_length: int = MAX_LENGTH):
    from transformers import BertTokenizer

    return BertTokenizer(vocab=chinese_vocab(), model_max_length=model_max_length)
