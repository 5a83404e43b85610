"""train: DreamBooth + LoRA on a Stable Diffusion model (diffusers + peft + accelerate).

Reads top to bottom: load the frozen model, add LoRA, cache VAE latents and text embeddings once,
then a loop of denoising steps with the prior-preservation loss. Every random draw of step k comes
from generators seeded by (seed, k), so a run resumed from a checkpoint gives the same adapter as
an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from components.base_model import model_identity, resolve_model
from components.config import TrainParams
from components.errors import CheckpointMismatch, TrainingDiverged
from components.io import StageResult, new_staging_dir, publish, read_json, sha256_file, sha256_json, write_json
from components.lora import add_lora, lora_state, save_adapter
from components.train_checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class TrainData:
    base_model: str
    resolution: int
    instance_images: list[Path]
    instance_captions: list[str]
    class_images: list[Path]
    class_prompt: str

    def fingerprint(self) -> dict:
        return {
            "base_model": model_identity(self.base_model),
            "resolution": self.resolution,
            "instance": [
                [sha256_file(p), c] for p, c in zip(self.instance_images, self.instance_captions, strict=False)
            ],
            "class": [sha256_file(p) for p in self.class_images],
            "class_prompt": self.class_prompt,
        }


@dataclass
class Cache:
    """What the loop draws from, computed once before it (frozen VAE and text encoder never run inside)."""

    instance: torch.Tensor  # latent (mean, std) per instance image and flip: [n, 2, 2, C, h, w]
    classes: torch.Tensor | None  # the same for class images, None without prior preservation
    prompt_ids: torch.Tensor  # token ids per distinct prompt
    embeddings: torch.Tensor | None  # text-encoder output per prompt; None when the text encoder trains
    instance_prompt: torch.Tensor  # prompt row of each instance image
    class_prompt: int | None  # prompt row of the class prompt


@dataclass
class Models:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    noise_scheduler: object
    latent_scale: float
    device: torch.device
    dtype: torch.dtype


Resume = Literal["no", "yes", "auto"]
"""no: start over; yes: continue from the latest checkpoint, refuse one made with other inputs;
auto: continue when the latest checkpoint matches this run's inputs, else start over (for DVC)."""


class TrainResult(StageResult):
    adapter_file: str
    adapter_sha256: str
    adapter_bytes: int
    steps: int
    final_loss: float
    resumed_from_step: int | None
    seconds: float
    loop_seconds: float  # the training loop (steps and checkpoints), without loading and caching
    inputs_sha256: str


def load_train_data(base_model, resolution, curated_dir: Path, captions_dir: Path, prior_folder: Path | None):
    captions = read_json(captions_dir / "captions.json")
    images = [curated_dir / e["image"] for e in captions["entries"]]
    texts = [(captions_dir / e["caption_file"]).read_text(encoding="utf-8").strip() for e in captions["entries"]]
    class_images, class_prompt = [], ""
    if prior_folder is not None:
        manifest = read_json(prior_folder / "manifest.json")
        class_images = [prior_folder / e["file"] for e in manifest["images"]]
        class_prompt = manifest["prompt"]
    return TrainData(base_model, resolution, images, texts, class_images, class_prompt)


def _pixels(path: Path, resolution: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1)


@torch.no_grad()
def _encode_latents(vae, paths: list[Path], resolution: int, device) -> torch.Tensor:
    """Latent distribution (mean, std) per image and per horizontal flip: [n, 2(flip), 2(mean/std), C, h, w]."""
    out = []
    for path in paths:
        px = _pixels(path, resolution).unsqueeze(0).to(device, vae.dtype)
        both = torch.cat([px, torch.flip(px, dims=[3])])
        dist = vae.encode(both).latent_dist
        out.append(torch.stack([dist.mean, dist.std], dim=1).float().cpu())
    return torch.stack(out)


def _tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _sample_latents(cache: torch.Tensor, idx: torch.Tensor, flip: torch.Tensor, g: torch.Generator, scale):
    stats = cache[idx, flip.long()]  # [b, 2, C, h, w]
    mean, std = stats[:, 0], stats[:, 1]
    return (mean + std * torch.randn(mean.shape, generator=g)) * scale


def train(
    data: TrainData, params: TrainParams, out_dir: Path, checkpoints_dir: Path, resume: Resume = "no"
) -> TrainResult:
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from transformers import AutoModel, AutoTokenizer

    started = time.time()
    use_prior = params.with_prior_preservation
    if use_prior and not data.class_images:
        raise ValueError("train.with_prior_preservation is on but there are no class images; run `prior` first")
    inputs_sha = sha256_json({"data": data.fingerprint(), "params": params.model_dump(mode="json")})
    accelerator = Accelerator(
        mixed_precision=params.mixed_precision, gradient_accumulation_steps=params.gradient_accumulation_steps
    )
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(params.mixed_precision, torch.float32)

    # 1. The frozen base model, loaded by the same code path as any hub checkpoint.
    folder = resolve_model(data.base_model)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = AutoModel.from_pretrained(folder / "text_encoder")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    noise_scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    torch.manual_seed(params.seed)  # LoRA A matrices are drawn here
    trainable = add_lora(unet, text_encoder, params)
    for module in (unet, text_encoder, vae):
        module.to(device, dtype=weight_dtype)
    cast_training_params([unet, text_encoder] if params.train_text_encoder else [unet], dtype=torch.float32)
    if params.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if params.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()

    # 2. Cache: VAE latents of every image and embeddings of every prompt, computed once.
    vae.eval()
    instance_cache = _encode_latents(vae, data.instance_images, data.resolution, device)
    class_cache = _encode_latents(vae, data.class_images, data.resolution, device) if use_prior else None
    vae.to("cpu")
    prompts = list(dict.fromkeys(data.instance_captions + ([data.class_prompt] if use_prior else [])))
    prompt_ids = _tokenize(tokenizer, prompts)
    instance_prompt_idx = torch.tensor([prompts.index(c) for c in data.instance_captions])
    class_prompt_idx = prompts.index(data.class_prompt) if use_prior else None
    cached_embeddings = None
    if not params.train_text_encoder:
        with torch.no_grad():
            cached_embeddings = text_encoder(prompt_ids.to(device))[0].float().cpu()
        text_encoder.to("cpu")
    cache = Cache(instance_cache, class_cache, prompt_ids, cached_embeddings, instance_prompt_idx, class_prompt_idx)

    # 3. Optimiser and schedule.
    optimizer = _optimizer(params, unet, text_encoder, trainable)
    lr_scheduler = get_scheduler(
        params.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=params.lr_warmup_steps,
        num_training_steps=params.max_steps,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    config_hash = inputs_sha

    # 4. Resume from the latest checkpoint when asked.
    start_step, losses, resumed_from = 0, [], None
    ckpt = latest_checkpoint(checkpoints_dir) if resume != "no" else None
    if ckpt is not None:
        try:
            start_step, losses = load_checkpoint(
                ckpt, accelerator.unwrap_model(unet), text_encoder, optimizer, lr_scheduler, config_hash
            )
            resumed_from = start_step
        except CheckpointMismatch:
            if resume == "yes":
                raise
            ckpt = None  # auto: the inputs changed since that checkpoint, so it is not this run's
    if ckpt is None:
        shutil.rmtree(checkpoints_dir, ignore_errors=True)

    # 5. The loop.
    models = Models(unet, text_encoder, noise_scheduler, vae.config.scaling_factor, device, weight_dtype)
    unet.train()
    if params.train_text_encoder:
        text_encoder.train()
    loop_started = time.time()
    bar = tqdm(range(start_step, params.max_steps), desc="train", unit="step", leave=False)
    for step in bar:
        torch.manual_seed(params.seed * 1_000_003 + step)  # LoRA dropout draws from the global RNG
        g = _step_generator(params.seed, step)
        step_losses = []
        for _ in range(params.gradient_accumulation_steps):
            with accelerator.accumulate(unet):
                loss, inst_loss, prior_loss = _loss(g, params, models, cache)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at step {step}; lower train.learning_rate "
                        f"(now {params.learning_rate}) or use mixed_precision 'bf16'/'no'. "
                        f"Checkpoints so far are in {checkpoints_dir}."
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, params.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_losses.append((loss.item(), inst_loss, prior_loss))
        mean = np.mean(step_losses, axis=0).tolist()
        losses.append(
            {
                "step": step + 1,
                "loss": mean[0],
                "instance_loss": mean[1],
                "prior_loss": mean[2],
                "lr": lr_scheduler.get_last_lr()[0],
            }
        )
        bar.set_postfix(loss=f"{mean[0]:.4f}")
        done = step + 1
        if done % params.checkpoint_every == 0 and done < params.max_steps:
            save_checkpoint(
                checkpoints_dir,
                done,
                lora_state(accelerator.unwrap_model(unet), text_encoder, params),
                optimizer,
                lr_scheduler,
                losses,
                config_hash,
                params.checkpoints_total_limit,
            )

    loop_seconds = time.time() - loop_started

    # 6. Outputs, written under a temporary name: a partial adapter never appears in out_dir.
    unet = accelerator.unwrap_model(unet)
    staging = new_staging_dir(out_dir)
    adapter = save_adapter(staging, unet, text_encoder, params)
    _write_loss_curve(staging / "loss.csv", losses)
    write_json(
        staging / "train_config.json",
        {
            "params": params.model_dump(mode="json"),
            "base_model": model_identity(data.base_model),
            "resolution": data.resolution,
            "instance_images": [p.name for p in data.instance_images],
            "instance_captions": data.instance_captions,
            "class_prompt": data.class_prompt,
            "class_images": len(data.class_images),
            "inputs_sha256": inputs_sha,
        },
    )
    result = TrainResult(
        adapter_file=adapter.name,
        adapter_sha256=sha256_file(adapter),
        adapter_bytes=adapter.stat().st_size,
        steps=params.max_steps,
        final_loss=losses[-1]["loss"] if losses else math.nan,
        resumed_from_step=resumed_from,
        seconds=round(time.time() - started, 2),
        loop_seconds=round(loop_seconds, 3),
        inputs_sha256=inputs_sha,
    )
    result.write(staging / "train.json")
    publish(staging, out_dir)
    return result


def _loss(g: torch.Generator, params: TrainParams, m: Models, cache: Cache):
    """One micro-batch: instance images, plus as many class images when prior preservation is on."""
    b = params.batch_size
    idx = torch.randint(len(cache.instance), (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5 if params.flip_augment else torch.zeros(b, dtype=torch.bool)
    latents = _sample_latents(cache.instance, idx, flip, g, m.latent_scale)
    prompt_rows = cache.instance_prompt[idx]
    if cache.classes is not None:
        cidx = torch.randint(len(cache.classes), (b,), generator=g)
        cflip = torch.rand(b, generator=g) < 0.5 if params.flip_augment else torch.zeros(b, dtype=torch.bool)
        latents = torch.cat([latents, _sample_latents(cache.classes, cidx, cflip, g, m.latent_scale)])
        prompt_rows = torch.cat([prompt_rows, torch.full((b,), cache.class_prompt)])
    noise = torch.randn(latents.shape, generator=g)
    scheduler = m.noise_scheduler
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if cache.embeddings is not None:
        hidden = cache.embeddings[prompt_rows].to(m.device, m.dtype)
    else:
        hidden = m.text_encoder(cache.prompt_ids[prompt_rows].to(m.device))[0]
    pred = m.unet(noisy.to(m.device, m.dtype), timesteps.to(m.device), hidden).sample.float()
    target = loss_target(scheduler, latents, noise, timesteps).to(m.device)
    if cache.classes is None:
        loss = F.mse_loss(pred, target)
        return loss, loss.item(), 0.0
    inst = F.mse_loss(pred[:b], target[:b])
    prior = F.mse_loss(pred[b:], target[b:])
    return inst + params.prior_loss_weight * prior, inst.item(), prior.item()


def loss_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the U-Net is trained to output for ``latents`` noised with ``noise`` at ``timesteps``: the
    noise itself (epsilon) or the velocity sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * latents."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(
        f"scheduler/scheduler_config.json: prediction_type {kind!r} is not one train supports "
        f"('epsilon', 'v_prediction'); use a base model whose scheduler predicts one of them"
    )


def _optimizer(params: TrainParams, unet, text_encoder, trainable):
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    groups = [{"params": unet_params, "lr": params.learning_rate}]
    if params.train_text_encoder:
        te = [p for p in text_encoder.parameters() if p.requires_grad]
        groups.append({"params": te, "lr": params.text_encoder_learning_rate})
    kwargs = dict(
        betas=(params.adam_beta1, params.adam_beta2), weight_decay=params.adam_weight_decay, eps=params.adam_epsilon
    )
    if params.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise RuntimeError(
                "train.use_8bit_adam needs bitsandbytes, the locked `gpu` extra: run `uv sync --frozen --extra gpu` "
                "(or set train.use_8bit_adam: false)"
            ) from exc
        if not torch.cuda.is_available():
            raise RuntimeError("train.use_8bit_adam needs a CUDA GPU; set it to false on CPU")
        return bnb.optim.AdamW8bit(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def _write_loss_curve(path: Path, losses: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss", "instance_loss", "prior_loss", "lr"])
        writer.writeheader()
        writer.writerows(losses)
