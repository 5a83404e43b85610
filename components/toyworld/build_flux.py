"""`conceptlab toyworld build --base flux`: trains toyworld-flux (FluxPipeline: CLIP + T5 text encoders and a
FluxTransformer2DModel) from a seed on the same renders as toyworld-sd, reusing its VAE and measuring it
with the same domain CLIP, and records it as a base of its own in toyworld-build.json and the model card."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from pydantic import BaseModel

from components.base_model import load_pipeline
from components.toyworld.build import (
    CLIP_NAME,
    SD_NAME,
    _publish,
    machine,
    measure_world,
    record_base,
    weights_bytes,
    write_samples,
)
from components.toyworld.data import world_data
from components.toyworld.model_card import write_model_card
from components.toyworld.tokenizer import MAX_LENGTH, domain_t5_tokenizer, domain_tokenizer
from components.toyworld.train_flux import new_scheduler, train_flux
from components.toyworld.train_vae import encode_all

FLUX_NAME = "toyworld-flux"


class FluxBuildConfig(BaseModel, extra="forbid"):
    seed: int = 0
    images: int = 30_000
    steps: int = 2_000
    batch: int = 32
    lr: float = 1e-3
    double_layers: int = 2
    single_layers: int = 4
    eval_images: int = 600
    eval_prompts: int = 120
    eval_guidance: float = 5.0


FLUX_PRESETS = {
    # About 40 minutes on a CPU core shared with other work (0.6-1.1 s a step at batch 32).
    "full": FluxBuildConfig(),
    # Seconds: proves the builder and the saved format, not the quality.
    "smoke": FluxBuildConfig(
        images=64, steps=3, batch=4, double_layers=1, single_layers=1, eval_images=8, eval_prompts=2
    ),
}


def flux_vae(sd_dir: Path, latents: torch.Tensor):
    """toyworld-sd's VAE with Flux's normalisation measured on ``latents`` (posterior means): the
    transformer sees (z - shift_factor) x scaling_factor, zero mean and unit variance like its noise
    (FLUX.1's VAE: shift 0.1159, scale 0.3611)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd_dir / "vae")
    shift = float(latents.mean())
    vae.register_to_config(shift_factor=shift, scaling_factor=float(1.0 / (latents - shift).std()))
    return vae


def save_flux_pipeline(folder: Path, vae, clip, clip_tok, t5, t5_tok, transformer) -> None:
    from diffusers import FluxPipeline

    pipe = FluxPipeline(
        scheduler=new_scheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_flux_world(out_dir: Path, config: FluxBuildConfig, sources: Path | None = None, log=print) -> dict:
    """Writes ``out_dir``/toyworld-flux and its section of toyworld-build.json; toyworld-sd's VAE and
    toyworld-clip are read from ``sources`` (default ``out_dir``: build the SD world first)."""
    sources = sources or out_dir
    timings: dict[str, float] = {}
    started = time.time()
    data = world_data(config.images, config.seed)  # the SD world's renders: same seed, same held-out combinations
    timings["render"] = time.time() - started

    mark = time.time()
    from diffusers import AutoencoderKL

    mean, std = encode_all(AutoencoderKL.from_pretrained(sources / SD_NAME / "vae").eval(), data)
    vae = flux_vae(sources / SD_NAME, mean)
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    clip_tok, t5_tok = domain_tokenizer(), domain_t5_tokenizer()
    clip, t5, transformer = train_flux(
        (mean - shift) * scale,
        std * scale,
        data.training_captions(clip_tok, MAX_LENGTH),
        data.training_captions(t5_tok, MAX_LENGTH),
        (clip_tok, t5_tok),
        config.steps,
        config.batch,
        config.lr,
        config.seed,
        config.double_layers,
        config.single_layers,
        log,
    )
    timings["flux"] = time.time() - mark
    flux_dir = _publish(
        out_dir, FLUX_NAME, lambda tmp: save_flux_pipeline(tmp, vae, clip, clip_tok, t5, t5_tok, transformer)
    )
    timings["total"] = time.time() - started

    mark = time.time()
    pipe = load_pipeline(str(flux_dir))
    metrics = measure_world(pipe, sources / CLIP_NAME, vae, config)
    timings["measure"] = time.time() - mark
    section = {
        "command": f"conceptlab toyworld build --base flux --seed {config.seed}",
        "config": config.model_dump(),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": machine(),
        "weights_bytes": weights_bytes(flux_dir),
        "scheduler": dict(pipe.scheduler.config),
        "vae": {"shift": shift, "scale": scale},
        "metrics": metrics,
    }
    report = record_base(out_dir, FLUX_NAME, section)
    write_samples(pipe, out_dir / f"{FLUX_NAME}-samples.png", config.eval_guidance)
    if "metrics" in report:  # the SD world's card, with this base's section added
        write_model_card(out_dir)
    return section
