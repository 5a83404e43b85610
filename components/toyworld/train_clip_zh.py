"""The toy world's Chinese-reading CLIP: transformers' ChineseCLIPModel (the architecture of OFA-Sys
Chinese-CLIP: a ViT and a BERT text tower with a Chinese character vocabulary), at toy size, trained
with the domain CLIP's contrastive objective on the Chinese captions.

Trained as Chinese-CLIP was (Yang et al. 2022, stage 1, "locked-image tuning"): the image tower is
the English CLIP's (toyworld-clip's ViT, copied weight for weight) and stays frozen; only the Chinese
text tower learns to meet it. Its image features are computed once, so a step costs a text forward
and backward. Trained from scratch on both towers for 1,000 steps (one CPU thread, 14 minutes), the
text tower had not yet learnt which colour word names the object and which the background
(zero-shot colour 0.16, chance 0.125).

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
from components.toyworld.train_clip import normalise, train_contrastive

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
            # No dropout, as the English domain CLIP: BERT's 0.1 slowed a 2-layer tower's learning which
            # colour word names the object and which the background (zero-shot colour at chance).
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
        vision_config={
            "image_size": RESOLUTION,
            "patch_size": 4,
            "hidden_size": 96,
            "num_hidden_layers": 3,
            "num_attention_heads": 3,
            "intermediate_size": 384,
            "projection_dim": 64,
            "hidden_act": "gelu",  # open_clip's ViT (the image tower copied from toyworld-clip)
        },
        projection_dim=64,
    )


def train_chinese_clip(
    data: WorldData, tokenizer, image_clip, steps: int, batch_size: int, lr: float, seed: int, log=print
):
    """``data`` captioned in Chinese (chinese.chinese_world); ``image_clip``: the open_clip model whose
    image tower is copied and locked."""
    from transformers import ChineseCLIPModel

    torch.manual_seed(seed)
    model = ChineseCLIPModel(chinese_clip_config(len(tokenizer), tokenizer.pad_token_id))
    copy_open_clip_vision(image_clip.visual, model)
    model.vision_model.requires_grad_(False).eval()
    model.visual_projection.requires_grad_(False)
    model.text_model.train()
    with torch.no_grad():
        features = torch.cat(
            [
                hf_features(model.get_image_features(pixel_values=normalise((data.batch(index) + 1) / 2)))
                for index in torch.arange(len(data.pixels)).split(512)
            ]
        )
    pad = tokenizer.pad_token_id

    def encode_text(ids: torch.Tensor) -> torch.Tensor:
        return hf_features(model.get_text_features(input_ids=ids, attention_mask=(ids != pad).long()))

    train_contrastive(
        model, features.__getitem__, encode_text, lambda: model.logit_scale,
        data, tokenizer, MAX_LENGTH, steps, batch_size, lr, seed, log,
    )  # fmt: skip
    return model.eval()


def copy_open_clip_vision(visual, model) -> None:
    """open_clip's VisionTransformer (class-token pooling, no patch bias) into ChineseCLIPModel's
    vision tower and visual projection: the same computation, HF's parameter names."""
    sd = visual.state_dict()
    width = sd["class_embedding"].shape[0]
    out = {
        "vision_model.embeddings.class_embedding": sd["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["ln_post.bias"],
        "visual_projection.weight": sd["proj"].T,
    }
    for i in range(len(visual.transformer.resblocks)):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for part, w, b in zip(
            ("q", "k", "v"),
            sd[src + "attn.in_proj_weight"].split(width),
            sd[src + "attn.in_proj_bias"].split(width),
            strict=True,
        ):
            out[f"{dst}self_attn.{part}_proj.weight"], out[f"{dst}self_attn.{part}_proj.bias"] = w, b
        for a, b in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            out[f"{dst}{b}.weight"], out[f"{dst}{b}.bias"] = sd[f"{src}{a}.weight"], sd[f"{src}{a}.bias"]
    missing = set(out) - set(model.state_dict())
    assert not missing, missing
    model.load_state_dict(out, strict=False)


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
