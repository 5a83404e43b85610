"""The toy world's cut-down CLIP tokenizer: same tokens as CLIP's on the domain's sentences, a few
hundred entries, and a rare identifier falls apart into byte tokens."""

from components.tiny_models import clip_tokenizer
from components.toyworld.domain import ObjectSpec
from components.toyworld.tokenizer import domain_tokenizer


def test_domain_sentences_tokenize_as_clip_does():
    small, full = domain_tokenizer(), clip_tokenizer()
    caption = ObjectSpec("triangle", "purple", "checkered", "small", "left", "white").caption()
    assert small.tokenize(caption) == full.tokenize(caption)
    assert len(small) < 1000 < len(full)


def test_identifier_is_rare_and_end_of_text_has_the_largest_id():
    tok = domain_tokenizer()
    assert tok.tokenize("sks") == ["s", "k", "s</w>"]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == len(tok) - 1
    ids = tok("a photo of a sks star", padding="max_length").input_ids
    assert len(ids) == 32 and ids.index(len(tok) - 1) == 9


def test_t5_tokenizer_keeps_every_domain_word_whole_and_splits_the_identifier():
    from components.toyworld.tokenizer import WORDS, domain_t5_tokenizer

    tok = domain_t5_tokenizer()
    assert all(tok.tokenize(word) == ["▁" + word] for word in WORDS)
    assert tok.tokenize("sks") == ["▁s", "k", "s"]
    assert tok.model_max_length == 32 and len(tok) < 1000
