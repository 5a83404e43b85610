"""The domain CLIP: an open_clip model with a small custom config (ViT on 32 px, 4 px patches; a
text transformer on the toy-world tokenizer), trained contrastively on the world's captions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.toyworld.data import RESOLUTION, WorldData, pick_captions
from components.toyworld.schedule import train_loop
from components.toyworld.tokenizer import MAX_LENGTH


def clip_config(vocab_size: int) -> dict:
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": RESOLUTION, "patch_size": 4, "width": 96, "layers": 3, "head_width": 32},
        "text_cfg": {
            "context_length": MAX_LENGTH,
            "vocab_size": vocab_size,
            "width": 64,
            "heads": 2,
            "layers": 2,
            # open_clip loads an HF tokenizer from the model's own local-dir folder when this is set.
            "hf_tokenizer_name": "conceptlab/toyworld-clip",
        },
    }


def normalise(pixels01: torch.Tensor) -> torch.Tensor:
    """open_clip's preprocessing on tensors already at the model's size: CLIP's mean and std."""
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (pixels01 - mean) / std


def train_clip(data: WorldData, tokenizer, steps: int, batch_size: int, lr: float, seed: int, log=print):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**clip_config(len(tokenizer))).train()
    train_contrastive(
        model, lambda index: model.encode_image(normalise((data.batch(index) + 1) / 2)), model.encode_text,
        lambda: model.logit_scale,
        data, tokenizer, MAX_LENGTH, steps, batch_size, lr, seed, log,
    )  # fmt: skip
    return model.eval()


def train_contrastive(
    model, encode_image, encode_text, logit_scale, data: WorldData, tokenizer, max_length: int,
    steps: int, batch_size: int, lr: float, seed: int, log=print,
) -> None:  # fmt: skip
    """CLIP's symmetric contrastive objective on the world's images and captions (full or partial),
    for any two towers: ``encode_image(image indices into data)``, ``encode_text(token ids)`` and the
    ``logit_scale()`` parameter (log of the temperature's inverse, as CLIP keeps it)."""
    full, partial = data.training_captions(tokenizer, max_length)
    gen = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> torch.Tensor:
        index = torch.randint(len(data.pixels), (batch_size,), generator=gen)
        img = F.normalize(encode_image(index), dim=-1)
        ids = pick_captions(full, partial, index, gen)
        txt = F.normalize(encode_text(ids), dim=-1)
        logits = logit_scale().exp().clamp(max=100) * img @ txt.T
        # Two images with the same caption are both right answers: soft targets over equal captions.
        same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
        targets = same / same.sum(-1, keepdim=True)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    train_loop(model.parameters(), step_loss, steps, lr, "clip", log=log)
