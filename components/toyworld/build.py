"""`conceptlab toyworld build`: trains the toy world's VAE, domain CLIP and Stable Diffusion (text
encoder + U-Net) from a seed, saves them in their libraries' own formats, measures them, and writes
the model card. The full preset fits in about an hour on 2 CPU cores."""

from __future__ import annotations

import json
import platform
import random
import time
from pathlib import Path

import torch
from pydantic import BaseModel

from components.base_model import load_pipeline
from components.io import new_staging_dir, publish
from components.tiny_models import save_sd_pipeline
from components.toyworld import train_clip as clip_training
from components.toyworld.attributes import attribute_accuracy, chance_levels
from components.toyworld.data import RESOLUTION, WorldData, to_images, world_data
from components.toyworld.domain import ObjectSpec, random_spec
from components.toyworld.model_card import write_model_card
from components.toyworld.tasks import HELD_OUT
from components.toyworld.tokenizer import MAX_LENGTH, domain_tokenizer
from components.toyworld.train_sd import train_sd
from components.toyworld.train_vae import encode_all, reconstruction_psnr, train_vae

SD_NAME, CLIP_NAME = "toyworld-sd", "toyworld-clip"


class BuildConfig(BaseModel, extra="forbid"):
    seed: int = 0
    images: int = 30_000
    vae_steps: int = 3_000
    vae_batch: int = 32
    vae_lr: float = 2e-3
    clip_steps: int = 3_000
    clip_batch: int = 64
    clip_lr: float = 1e-3
    sd_steps: int = 8_000
    sd_batch: int = 32
    sd_lr: float = 1e-3
    eval_images: int = 600
    eval_prompts: int = 120
    eval_guidance: float = 5.0


PRESETS = {
    "full": BuildConfig(),
    # Seconds, not minutes: proves the builder and the saved formats, not the quality.
    "smoke": BuildConfig(
        images=256,
        vae_steps=3,
        clip_steps=3,
        sd_steps=3,
        vae_batch=8,
        clip_batch=8,
        sd_batch=8,
        eval_images=16,
        eval_prompts=4,
    ),
}


BUILD_RECORD = "toyworld-build.json"  # build settings, times, sizes and measurements of every toy base


def build_world(out_dir: Path, config: BuildConfig, log=print) -> dict:
    timings: dict[str, float] = {}
    started = time.time()
    data = world_data(config.images, config.seed)
    timings["render"] = time.time() - started

    mark = time.time()
    vae = train_vae(data, config.vae_steps, config.vae_batch, config.vae_lr, config.seed, log)
    timings["vae"] = time.time() - mark

    tokenizer = domain_tokenizer()
    mark = time.time()
    clip = clip_training.train_clip(
        data, tokenizer, config.clip_steps, config.clip_batch, config.clip_lr, config.seed, log
    )
    timings["clip"] = time.time() - mark
    clip_dir = _publish(out_dir, CLIP_NAME, lambda tmp: save_clip(clip, tokenizer, tmp))

    mark = time.time()
    mean, std = encode_all(vae, data)
    scale = vae.config.scaling_factor
    captions = data.training_captions(tokenizer, MAX_LENGTH)
    text_encoder, unet = train_sd(
        mean * scale, std * scale, captions, tokenizer, config.sd_steps, config.sd_batch, config.sd_lr, config.seed, log
    )
    timings["sd"] = time.time() - mark
    sd_dir = _publish(out_dir, SD_NAME, lambda tmp: save_sd_pipeline(tmp, unet, vae, text_encoder, tokenizer))
    timings["total"] = time.time() - started

    mark = time.time()
    pipe = load_pipeline(str(sd_dir))
    metrics = measure_world(pipe, clip_dir, vae, config)
    timings["measure"] = time.time() - mark
    report = {
        "command": f"conceptlab toyworld build --seed {config.seed}",
        "config": config.model_dump(),
        "held_out_combinations": sorted(HELD_OUT),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": machine(),
        "weights_bytes": weights_bytes(sd_dir, clip_dir),
        "metrics": metrics,
    }
    # toyworld-sd's record is the top level; the other bases' sections (`bases`) stay.
    report["bases"] = read_build_record(out_dir).get("bases", {})
    write_build_record(out_dir, report)
    write_samples(pipe, out_dir / "toyworld-samples.png", config.eval_guidance)
    write_model_card(out_dir)
    return report


def machine() -> dict:
    """Where a build ran: its times mean nothing without it."""
    return {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__}


def weights_bytes(*model_dirs: Path) -> dict[str, int]:
    """The committed size of each model folder (its safetensors)."""
    return {d.name: sum(p.stat().st_size for p in d.rglob("*.safetensors")) for d in model_dirs}


def read_build_record(out_dir: Path) -> dict:
    path = out_dir / BUILD_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_build_record(out_dir: Path, report: dict) -> None:
    # ensure_ascii=False: the Chinese base's prompts stay readable in the committed file.
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    (out_dir / BUILD_RECORD).write_text(text, encoding="utf-8")


def record_base(out_dir: Path, name: str, section: dict) -> dict:
    """Adds (or replaces) one more base's section, keyed by its folder name, to the build record
    and returns the record; toyworld-sd's top-level record and the other bases' sections stay."""
    report = read_build_record(out_dir)
    report.setdefault("bases", {})[name] = section
    write_build_record(out_dir, report)
    return report


def _publish(out_dir: Path, name: str, save) -> Path:
    """Saves into a staging folder and renames it into place: a half-written model never appears."""
    staging = new_staging_dir(out_dir / name)
    save(staging)
    return publish(staging, out_dir / name)


def save_clip(model, tokenizer, folder: Path) -> None:
    """open_clip's local-dir format, with the HF tokenizer in the same folder."""
    import open_clip
    from safetensors.torch import save_file

    config = {
        "model_cfg": clip_training.clip_config(len(tokenizer)),
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    tokenizer.save_pretrained(folder)


def measure_world(pipe, clip_dir: Path, vae, config: BuildConfig, caption=ObjectSpec.caption) -> dict:
    """Through the saved folders, as every user loads them (``pipe`` is the saved SD, loaded): VAE
    fidelity, CLIP zero-shot accuracy per attribute on unseen renders, and how often the base model's
    images show what the prompt asked (prompts written by ``caption``, in the base model's language)."""
    from components.clip_scores import ClipScorer
    from components.config import GenerationParams
    from components.generation import generate

    test = eval_renders(config)
    scorer = ClipScorer.load(str(clip_dir))
    zero_shot = clip_zero_shot(scorer, test)

    rng = random.Random(config.seed + 7)
    specs = [random_spec(rng, HELD_OUT) for _ in range(config.eval_prompts)]
    params = GenerationParams(scheduler="ddim", steps=25, guidance_scale=config.eval_guidance, batch_size=16)
    images = generate(pipe, [caption(s) for s in specs], list(range(len(specs))), params, RESOLUTION)
    prompt_following = attribute_accuracy(scorer, scorer.images(images), specs)
    return {
        "vae_psnr_db": round(reconstruction_psnr(vae, test), 2),
        "clip_zero_shot_accuracy": {k: round(v, 3) for k, v in zero_shot.items()},
        "prompt_following_accuracy": {k: round(v, 3) for k, v in prompt_following.items()},
        "chance": {k: round(v, 3) for k, v in chance_levels().items()},
        "prompt_following_settings": params.model_dump() | {"prompts": len(specs), "resolution": RESOLUTION},
    }


def eval_renders(config: BuildConfig) -> WorldData:
    """Unseen renders for measurement: a seed the training data never uses."""
    return world_data(config.eval_images, config.seed + 1_000_003)


def clip_zero_shot(scorer, test: WorldData) -> dict[str, float]:
    """The CLIP's accuracy per attribute on ``test`` (the model card's zero-shot column, unrounded)."""
    return attribute_accuracy(scorer, scorer.images(to_images(test.batch(torch.arange(len(test.pixels))))), test.specs)


SAMPLE_PROMPTS = (
    "a photo of a large red circle on a blue background",
    "a photo of a large green striped square on a white background",
    "a photo of a large yellow dotted triangle on a black background",
    "a photo of a large blue checkered diamond on a yellow background",
    "a photo of a large purple star on a green background",
    "a photo of a large white cross on a red background",
    "a photo of a star",
    "a photo of a triangle",
    "a photo of a large orange dotted star on a black background",  # a held-out combination
    "a photo of a small red circle on the left on a white background",
)


def write_samples(pipe, path: Path, guidance: float, seeds: int = 4, sample_prompts=SAMPLE_PROMPTS) -> None:
    """A grid for the model card: one column per prompt (SAMPLE_PROMPTS above), one row per seed."""
    from PIL import Image

    from components.config import GenerationParams
    from components.generation import generate

    params = GenerationParams(scheduler="ddim", steps=25, guidance_scale=guidance, batch_size=10)
    prompts = [p for _ in range(seeds) for p in sample_prompts]
    images = generate(pipe, prompts, list(range(len(prompts))), params, RESOLUTION)
    cell, cols = 64, len(sample_prompts)
    grid = Image.new("RGB", (cols * cell, seeds * cell))
    for i, img in enumerate(images):
        grid.paste(img.resize((cell, cell), Image.Resampling.NEAREST), ((i % cols) * cell, (i // cols) * cell))
    grid.save(path)
