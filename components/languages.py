"""Which language a prompt is written in, and which languages a CLIP's text tower reads: CLIP-T of
a Chinese prompt scored by an English-only text encoder is a number about byte tokens it never
learned, not about the image, so evaluate refuses the pair instead of reporting it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.config import ConfigError

# CJK Unified Ideographs (and extension A, compatibility ideographs): Chinese characters.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
MIN_TOKENS = 1000  # vocabulary entries of a script before a tokenizer is taken to read its language


def prompt_language(text: str) -> str:
    """'zh' when the text has a Chinese character, else 'en'."""
    return "zh" if _HAN.search(text) else "en"


def clip_languages(folder: Path) -> list[str]:
    """The languages a CLIP folder's text tower reads: its ``conceptlab.json`` ``languages`` when the
    folder says so, else read off its tokenizer's vocabulary (a CLIP that has a thousand Chinese
    characters as tokens reads Chinese; one with a thousand Latin-letter tokens reads English)."""
    declared = folder / "conceptlab.json"
    if declared.exists():
        return list(json.loads(declared.read_text()).get("languages", []))
    tokens = _vocab_tokens(folder)
    if tokens is None:
        return ["en"]  # open_clip's built-in tokenizer: CLIP's English BPE
    han = sum(1 for t in tokens if _HAN.search(t))
    latin = sum(1 for t in tokens if re.fullmatch(r"(##)?[A-Za-z]{2,}(</w>)?", t))
    found = [lang for lang, count in (("en", latin), ("zh", han)) if count >= MIN_TOKENS]
    return found or (["zh"] if han > latin else ["en"])


def _vocab_tokens(folder: Path) -> list[str] | None:
    for name in ("vocab.json", "tokenizer.json", "vocab.txt"):
        path = folder / name
        if not path.exists():
            continue
        if name == "vocab.txt":
            return path.read_text(encoding="utf-8").splitlines()
        data = json.loads(path.read_text(encoding="utf-8"))
        return list(data.get("model", {}).get("vocab", {}) if name == "tokenizer.json" else data)
    return None


def check_prompt_languages(
    clip_model: str, languages: list[str] | frozenset[str], prompts: list[str], concept: str
) -> None:
    """Refuses prompts in a language the CLIP does not read, naming the key to change."""
    asked = sorted({prompt_language(p) for p in prompts})
    missing = [lang for lang in asked if lang not in languages]
    if not missing:
        return
    reads = " and ".join(LANGUAGE_NAMES.get(lang, lang) for lang in sorted(languages)) or "no known language"
    wanted = LANGUAGE_NAMES.get(missing[0], missing[0])
    example = " such as toyworld-clip-zh (the toy world's) or a Chinese-CLIP folder" if missing[0] == "zh" else ""
    raise ConfigError(
        f"evaluate.clip_model {clip_model} reads {reads}; the prompts of concept {concept} are {wanted} "
        f"(e.g. {next(p for p in prompts if prompt_language(p) == missing[0])!r}): its CLIP-T would be "
        f"meaningless. Set evaluate.clip_model to a {wanted}-reading CLIP{example}, in the concept's "
        f"overrides (a CLIP folder that does read {wanted} says so in its conceptlab.json: "
        f'{{"languages": {json.dumps(sorted({*languages, *missing}))}}})'
    )
