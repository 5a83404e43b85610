"""A small CLIP BPE tokenizer for the toy world: CLIP's own merges, cut down to what the domain's
words need, so the text encoders' embedding tables stay a few hundred rows instead of 49,408.

Every byte symbol stays in the vocabulary, so any text still tokenizes: a word the world never
used (a DreamBooth identifier such as "sks") falls apart into byte tokens the base model never
saw in training, which is what a rare identifier should be.
"""

from __future__ import annotations

import itertools

from components.tiny_models import clip_bpe_vocab
from components.toyworld.domain import COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES

MAX_LENGTH = 32  # tokens; the longest toy-world prompt has 20
WORDS = (
    ["a", "an", "photo", "of", "on", "the", "background", "with", "and", "in", "picture", "image", "shape"]
    + list(COLOURS)
    + list(SHAPES)
    + list(PATTERNS)
    + list(SIZES)
    + list(POSITIONS)
)
SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]  # last, so end-of-text has the largest id (CLIP pools there)


def _fired_merges(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges CLIP's BPE applies to one word, in order (lowest rank first, as CLIP does)."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    fired = []
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(itertools.pairwise(symbols))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        pair = (symbols[i], symbols[i + 1])
        fired.append(pair)
        # Merge every occurrence of the pair, left to right, as the reference implementation does.
        merged, j = [], 0
        while j < len(symbols):
            if j < len(symbols) - 1 and (symbols[j], symbols[j + 1]) == pair:
                merged.append(symbols[j] + symbols[j + 1])
                j += 2
            else:
                merged.append(symbols[j])
                j += 1
        symbols = merged
    return fired


def domain_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte symbols (plain and end-of-word), the merged tokens the domain words need, then the specials."""
    full_vocab, merges = clip_bpe_vocab()
    ranks = {pair: i for i, pair in enumerate(merges)}
    kept = {pair for word in WORDS for pair in _fired_merges(word, ranks)}
    kept_merges = sorted(kept, key=ranks.__getitem__)
    tokens = list(full_vocab)[:512] + ["".join(pair) for pair in kept_merges]
    tokens = list(dict.fromkeys(tokens)) + SPECIAL_TOKENS
    return {tok: i for i, tok in enumerate(tokens)}, kept_merges


def domain_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = domain_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH, pad_token="<|endoftext|>")


def domain_t5_tokenizer():
    """A T5 (Unigram) tokenizer whose whole-word pieces are the domain's words: FluxPipeline's second
    tokenizer for toyworld-flux. Other text (an identifier such as "sks") falls apart into characters."""
    from components.tiny_models_flow import t5_tokenizer

    return t5_tokenizer(WORDS, max_length=MAX_LENGTH)
