"""The toy world's Chinese-reading CLIP: transformers' ChineseCLIPModel (the architecture of OFA-Sys
Chinese-CLIP: a ViT and a BERT text tower with a Chinese character vocabulary), at toy size, trained
with the domain CLIP's contrastive objective on the Chinese captions.

Why not open_clip: its HF text towers build their config with AutoConfig.from_pretrained(name), a hub
id or a path relative to where it runs, so a local-dir folder cannot carry its own BERT. A
ChineseCLIPModel folder saved with save_pretrained is what real Chinese-CLIP checkpoints are: the same
loading code (ClipScorer) reads OFA-Sys/chinese-clip-vit-base-patch16.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.clip_scores import hf_features
from components.toyworld.chinese import MAX_LENGTH
from components.toyworld.data import RESOLUTION, WorldData
from components.toyworld.train_clip import train_contrastive

LANGUAGES = ["zh"]  # recorded in the folder (conceptlab.json) for evaluate's language check


def chinese_clip_config(vocab_size: int, pad_token_id: int = 0):
    from transformers import ChineseCLIPConfig

    # Same sizes as the English domain CLIP (train_clip.clip_config).
    return ChineseCLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 256,
            "max_position_embeddings": MAX_LENGTH,
            "pad_token_id": pad_token_id,
        },
        vision_config={
            "image_size": RESOLUTION,
            "patch_size": 4,
            "hidden_size": 96,
            "num_hidden_layers": 3,
            "num_attention_heads": 3,
            "intermediate_size": 384,
            "projection_dim": 64,
        },
        projection_dim=64,
    )


def train_chinese_clip(data: WorldData, tokenizer, steps: int, batch_size: int, lr: float, seed: int, log=print):
    """``data`` captioned in Chinese (chinese.chinese_world)."""
    from transformers import ChineseCLIPModel

    torch.manual_seed(seed)
    model = ChineseCLIPModel(chinese_clip_config(len(tokenizer), tokenizer.pad_token_id)).train()
    pad = tokenizer.pad_token_id

    def encode_text(ids: torch.Tensor) -> torch.Tensor:
        return hf_features(model.get_text_features(input_ids=ids, attention_mask=(ids != pad).long()))

    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        return hf_features(model.get_image_features(pixel_values=pixels))

    train_contrastive(
        model, encode_image, encode_text, lambda: model.logit_scale,
        data, tokenizer, MAX_LENGTH, steps, batch_size, lr, seed, log,
    )  # fmt: skip
    return model.eval()


def save_chinese_clip(model, tokenizer, folder: Path) -> None:
    """save_pretrained of the model and of its processor (image processor at 32 px + the BERT tokenizer)."""
    import open_clip
    from transformers import ChineseCLIPImageProcessor, ChineseCLIPProcessor

    image_processor = ChineseCLIPImageProcessor(
        size={"shortest_edge": RESOLUTION},
        crop_size={"height": RESOLUTION, "width": RESOLUTION},
        image_mean=list(open_clip.OPENAI_DATASET_MEAN),
        image_std=list(open_clip.OPENAI_DATASET_STD),
    )
    model.save_pretrained(folder, safe_serialization=True)
    ChineseCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    (folder / "conceptlab.json").write_text(json.dumps({"languages": LANGUAGES}, indent=2) + "\n")
