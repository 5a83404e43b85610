"""`conceptlab toyworld build --base taiyi`: the toy world's Taiyi-layout base (an SD1.x U-Net conditioned
by a BERT encoder with a Chinese character vocabulary, as Taiyi-Stable-Diffusion-Chinese) and a
Chinese-reading CLIP to evaluate it, trained on the Chinese captions. The VAE is toyworld-sd's (same images, same
latents) and the Chinese CLIP's image tower toyworld-clip's (locked, as Chinese-CLIP trains); the
trainers are build.py's with another text tower."""

from __future__ import annotations

import time
from pathlib import Path

from components.base_model import load_pipeline
from components.tiny_models import save_sd_pipeline
from components.toyworld.build import (
    CLIP_NAME,
    PRESETS,
    SAMPLE_PROMPTS,
    SD_NAME,
    BuildConfig,
    _publish,
    machine,
    measure_world,
    record_base,
    weights_bytes,
    write_samples,
)
from components.toyworld.chinese import MAX_LENGTH, chinese_caption, chinese_tokenizer, chinese_world
from components.toyworld.data import world_data
from components.toyworld.model_card import write_model_card
from components.toyworld.tasks import HELD_OUT
from components.toyworld.train_clip_zh import save_chinese_clip, train_chinese_clip
from components.toyworld.train_sd import CROSS_ATTENTION_DIM, train_sd
from components.toyworld.train_vae import encode_all

TAIYI_NAME, CLIP_ZH_NAME = "toyworld-taiyi", "toyworld-clip-zh"

TAIYI_PRESETS = {
    # About 40 minutes on one CPU thread (measured: build report `seconds`); toyworld-sd's full
    # preset trains twice as many SD steps on two.
    "full": BuildConfig(clip_steps=1_500, sd_steps=3_000),
    "smoke": PRESETS["smoke"],
}

# build.SAMPLE_PROMPTS in Chinese, column for column (a Taiyi-style tag on two of them).
SAMPLE_PROMPTS_ZH = (
    "一个大的红色圆形,蓝色背景",
    "一个大的绿色条纹正方形,白色背景",
    "一个大的黄色波点三角形,黑色背景,高清",
    "一个大的蓝色格子菱形,黄色背景",
    "一个大的紫色星形,绿色背景",
    "一个大的白色十字形,红色背景",
    "一个星形",
    "一个三角形",
    "一个大的橙色波点星形,黑色背景",  # a held-out combination
    "一个小的红色圆形,在左边,白色背景,4K照片",
)
assert len(SAMPLE_PROMPTS_ZH) == len(SAMPLE_PROMPTS)


def new_bert_encoder(tokenizer):
    """Taiyi's text encoder class (BertModel; its last hidden states feed the U-Net) at toy size."""
    from transformers import BertConfig, BertModel

    return BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=4 * CROSS_ATTENTION_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_taiyi_world(
    out_dir: Path, config: BuildConfig, vae_dir: Path | None = None, clip_dir: Path | None = None, log=print
) -> dict:
    """Writes toyworld-taiyi/ and toyworld-clip-zh/ into ``out_dir`` and the `taiyi` section of its
    toyworld-build.json; ``vae_dir``, ``clip_dir``: toyworld-sd's VAE and the English toyworld-clip
    (whose image tower the Chinese CLIP keeps), by default in ``out_dir``."""
    from diffusers import AutoencoderKL

    from components.clip_scores import ClipScorer

    vae_dir = vae_dir or out_dir / SD_NAME / "vae"
    for needed in (vae_dir / "config.json", (clip_dir or out_dir / CLIP_NAME) / "open_clip_config.json"):
        if not needed.exists():
            raise FileNotFoundError(
                f"{needed}: the Taiyi toy world reuses toyworld-sd's VAE and toyworld-clip's image tower; "
                "build them first (`conceptlab toyworld build`)"
            )
    timings: dict[str, float] = {}
    started = time.time()
    data = chinese_world(world_data(config.images, config.seed), config.seed)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    tokenizer = chinese_tokenizer()
    timings["render"] = time.time() - started

    mark = time.time()
    image_clip = ClipScorer.load(str(clip_dir or out_dir / CLIP_NAME)).model  # its image tower, locked
    clip = train_chinese_clip(
        data, tokenizer, image_clip, config.clip_steps, config.clip_batch, config.clip_lr, config.seed, log
    )
    timings["clip"] = time.time() - mark
    _publish(out_dir, CLIP_ZH_NAME, lambda tmp: save_chinese_clip(clip, tokenizer, tmp))

    mark = time.time()
    mean, std = encode_all(vae, data)
    scale = vae.config.scaling_factor
    text_encoder, unet = train_sd(
        mean * scale,
        std * scale,
        data.training_captions(tokenizer, MAX_LENGTH),
        tokenizer,
        config.sd_steps,
        config.sd_batch,
        config.sd_lr,
        config.seed,
        log,
        text_encoder_factory=new_bert_encoder,
        max_length=MAX_LENGTH,
    )
    timings["sd"] = time.time() - mark
    _publish(out_dir, TAIYI_NAME, lambda tmp: save_sd_pipeline(tmp, unet, vae, text_encoder, tokenizer))
    timings["total"] = time.time() - started

    return measure_and_record(out_dir, config, timings, vae)


def measure_and_record(out_dir: Path, config: BuildConfig, timings: dict[str, float], vae) -> dict:
    """Measures the saved toyworld-taiyi and toyworld-clip-zh in ``out_dir`` (build.measure_world with
    Chinese prompts), writes its section of toyworld-build.json, the samples and the card."""
    sd_dir, clip_dir = out_dir / TAIYI_NAME, out_dir / CLIP_ZH_NAME
    mark = time.time()
    pipe = load_pipeline(str(sd_dir))
    metrics = measure_world(pipe, clip_dir, vae, config, caption=chinese_caption)
    timings = timings | {"measure": time.time() - mark}
    section = {
        "command": f"conceptlab toyworld build --base taiyi --seed {config.seed}",
        "config": config.model_dump(exclude={"vae_steps", "vae_batch", "vae_lr"}),
        "vae": "toyworld-sd/vae (reused)",
        "held_out_combinations": sorted(HELD_OUT),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": machine(),
        "weights_bytes": weights_bytes(sd_dir, clip_dir),
        "metrics": metrics,
    }
    report = record_base(out_dir, TAIYI_NAME, section)
    write_samples(pipe, out_dir / "toyworld-taiyi-samples.png", config.eval_guidance, sample_prompts=SAMPLE_PROMPTS_ZH)
    if "metrics" in report:  # the card needs toyworld-sd's section too
        write_model_card(out_dir)
    return section
