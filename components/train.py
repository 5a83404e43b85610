"""train: DreamBooth + LoRA on any supported model family (diffusers + peft + accelerate).

Reads top to bottom: load the frozen model, add LoRA, cache VAE latents and text embeddings once,
then a loop of denoising steps with the prior-preservation loss. What differs between model
families (which text encoders, what conditioning, the noisy input and the target, the denoiser
call, where LoRA goes, which pipeline saves it) is asked of the family (components/families); this
loop names none. Every random draw of step k comes from generators seeded by (seed, k), so a run
resumed from a checkpoint gives the same adapter as an uninterrupted one.

Data parallel (train.num_processes > 1, DDP through accelerate; `conceptlab train` launches the
processes): every process draws the whole batch of each step from the same seeded generator and
computes its own equal share of the rows, so the batch is the same set of examples whatever the
process count; DDP averages the gradients; only the main process writes checkpoints and outputs.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from components.base_model import model_identity, resolve_model
from components.config import ConfigError, TrainParams
from components.errors import CheckpointMismatch, TrainingDiverged
from components.families import Family, Parts, TrainImage, family_for
from components.families.base import LossOptions
from components.io import StageResult, new_staging_dir, publish, read_json, sha256_file, sha256_json, write_json
from components.lora import adapted, add_lora, lora_state, save_adapter
from components.train_checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from components.train_memory import (
    OneOnDevice,
    check_memory_options,
    is_quantized,
    quantization_config,
    release_frozen,
)
from components.train_speedups import adamw_kwargs, apply_threads, compiled, prepare_denoiser, use_compile


@dataclass(frozen=True)
class TrainData:
    base_model: str
    resolution: int
    instance_images: list[TrainImage]
    instance_captions: list[str]
    class_images: list[TrainImage]
    class_prompt: str

    def fingerprint(self) -> dict:
        return {
            "base_model": model_identity(self.base_model),
            "resolution": self.resolution,
            "instance": [
                [sha256_file(i.path), c, i.original_size, i.crop_box]
                for i, c in zip(self.instance_images, self.instance_captions, strict=False)
            ],
            "class": [sha256_file(i.path) for i in self.class_images],
            "class_prompt": self.class_prompt,
        }


@dataclass
class ImageCache:
    """Per image and horizontal flip: the latent distribution and the family's image conditioning."""

    latents: list[torch.Tensor]  # per image [2 (flip), 2 (mean, std), C, h, w], at the image's bucket size
    sizes: list[tuple[int, int]]  # per image: its bucket (width, height)
    conditioning: dict[str, torch.Tensor]  # each [n, 2 (flip), ...]; SDXL: time ids
    shift: float  # latents enter the denoiser as (sample - shift) * scale (the VAE's config)
    scale: float

    def buckets(self) -> dict[tuple[int, int], torch.Tensor]:
        """The images of each bucket, by index."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(self.sizes):
            groups.setdefault(size, []).append(i)
        return {size: torch.tensor(members) for size, members in groups.items()}

    def draw(self, b: int, g: torch.Generator, bucket: tuple[int, int] | None = None) -> torch.Tensor:
        """``b`` image indices from one bucket (with replacement). The bucket is ``bucket``, else drawn
        with weight its image count (every image as likely as with one bucket); with a single bucket the
        draw is exactly the one-bucket draw, so square runs are unchanged."""
        groups = self.buckets()
        if len(groups) == 1:
            return torch.randint(len(self.sizes), (b,), generator=g)
        if bucket is None:
            bucket = self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]
        members = groups[bucket]
        return members[torch.randint(len(members), (b,), generator=g)]

    def sample(self, idx: torch.Tensor, flip: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        stats = torch.stack([self.latents[i][f] for i, f in zip(idx.tolist(), flip.long().tolist(), strict=True)])
        mean, std = stats[:, 0], stats[:, 1]
        return (mean + std * torch.randn(mean.shape, generator=g) - self.shift) * self.scale

    def conditioning_at(self, idx: torch.Tensor, flip: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx, flip.long()] for k, v in self.conditioning.items()}


@dataclass
class Cache:
    """What the loop draws from, computed once before it (frozen VAE and text encoders never run inside)."""

    instance: ImageCache
    classes: ImageCache | None  # None without prior preservation
    prompt_tokens: dict[str, torch.Tensor]  # token ids per distinct prompt, per text encoder
    prompt_embeddings: (
        dict[str, torch.Tensor] | None
    )  # the family's conditioning per prompt; None when text encoders train
    instance_prompt: torch.Tensor  # prompt row of each instance image
    class_prompt: int | None  # prompt row of the class prompt


@dataclass
class Models:
    family: Family
    parts: Parts
    device: torch.device
    dtype: torch.dtype
    loss_options: LossOptions


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch: the index-th of count equal runs of rows (its DDP rank)."""

    index: int
    count: int

    def rows(self, batch_size: int) -> torch.Tensor:
        size = batch_size // self.count  # the config makes batch_size a multiple of count
        return torch.arange(self.index * size, (self.index + 1) * size)


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
    step_seconds: float = math.nan  # median wall time of one step (each step ends in a device sync)
    inputs_sha256: str


def load_train_data(base_model, resolution, curated_dir: Path, captions_dir: Path, prior_folder: Path | None):
    captions = read_json(captions_dir / "captions.json")
    origins = _curated_origins(curated_dir)
    images = [_train_image(curated_dir / e["image"], origins.get(e["image"])) for e in captions["entries"]]
    texts = [(captions_dir / e["caption_file"]).read_text(encoding="utf-8").strip() for e in captions["entries"]]
    class_images, class_prompt = [], ""
    if prior_folder is not None:
        manifest = read_json(prior_folder / "manifest.json")
        bucketed = "buckets" in manifest.get("inputs", {})  # else square: trained at the training resolution
        class_images = [_class_image(prior_folder / e["file"], bucketed and e.get("size")) for e in manifest["images"]]
        class_prompt = manifest["prompt"]
    return TrainData(base_model, resolution, images, texts, class_images, class_prompt)


def _curated_origins(curated_dir: Path) -> dict[str, dict]:
    """Each curated image's manifest entry (original size, crop box, bucket), by its path under curated_dir."""
    manifest = curated_dir / "manifest.json"
    record = read_json(manifest) if manifest.exists() else {"entries": []}
    buckets = record.get("buckets", [])
    if len(buckets) == 1 and buckets[0][0] == buckets[0][1]:  # square: train at the training resolution, as always
        return {e["output"]: {**e, "bucket": None} for e in record["entries"] if e.get("output")}
    return {e["output"]: e for e in record["entries"] if e.get("output")}


def _train_image(path: Path, entry: dict | None) -> TrainImage:
    """An image with the size and crop it was made from; without a record (class images are generated
    at the training size), the image is its own original and nothing was cut."""
    if entry and entry.get("original_size"):
        box, bucket = entry.get("crop_box"), entry.get("bucket")
        return TrainImage(
            path, tuple(entry["original_size"]), tuple(box) if box else None, tuple(bucket) if bucket else None
        )
    with Image.open(path) as img:
        return TrainImage(path, img.size, None)


def _class_image(path: Path, size: list[int] | None) -> TrainImage:
    """A generated class image: its own original, uncut, trained at the bucket it was generated for
    (None, from a square prior folder: at the training resolution)."""
    with Image.open(path) as img:
        return TrainImage(path, img.size, None, tuple(size) if size else None)


def _pixels(path: Path, size: tuple[int, int]) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    if img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1)


@torch.no_grad()
def _encode_images(family: Family, vae, images: list[TrainImage], resolution: int, device) -> ImageCache:
    """Latent distribution (mean, std) per image and per horizontal flip, and the family's per-image
    conditioning for each, computed once."""
    latents, conditioning = [], []
    for image in images:
        px = _pixels(image.path, image.target_size(resolution)).unsqueeze(0).to(device, vae.dtype)
        both = torch.cat([px, torch.flip(px, dims=[3])])
        dist = vae.encode(both).latent_dist
        latents.append(torch.stack([dist.mean, dist.std], dim=1).float().cpu())  # at the image's bucket size
        conditioning.append([family.image_conditioning(image, resolution, flipped) for flipped in (False, True)])
    keys = conditioning[0][0].keys() if conditioning else ()
    return ImageCache(
        latents=latents,
        sizes=[image.target_size(resolution) for image in images],
        conditioning={k: torch.stack([torch.stack([c[0][k], c[1][k]]) for c in conditioning]) for k in keys},
        shift=float(getattr(vae.config, "shift_factor", None) or 0.0),
        scale=float(vae.config.scaling_factor),
    )


def _check_class_buckets(data: TrainData) -> None:
    """Each batch takes its class images from its instance images' bucket: every bucket needs some."""
    instance = {i.target_size(data.resolution) for i in data.instance_images}
    classes = {i.target_size(data.resolution) for i in data.class_images}
    missing = sorted(instance - classes)
    if missing:
        have = ", ".join(f"{w}x{h}" for w, h in sorted(classes))
        raise ValueError(
            f"the class images ({have}) cover no aspect bucket "
            f"{', '.join(f'{w}x{h}' for w, h in missing)} of the instance photos; re-run `prior` after `curate` "
            f"(it generates over the photos' buckets) with prior.num_images at least the number of buckets"
        )


def _build_cache(
    family: Family, parts: Parts, data: TrainData, params: TrainParams, device: torch.device, dtype: torch.dtype
) -> Cache:
    """The loop's cache, made by the frozen VAE and the text encoders whose embeddings are cached, in
    ``dtype``. offload_frozen 'none' puts them all on the device first; 'cpu'/'free' bring each there
    alone while it runs (OneOnDevice) and leave all of them on the CPU."""
    use_prior = params.with_prior_preservation
    frozen = {"vae": parts.vae, **({} if params.train_text_encoder else parts.text_encoders)}
    if params.offload_frozen == "none":
        for module in frozen.values():
            module.to(device, dtype=dtype)
        placement = None
    else:
        for module in frozen.values():
            module.to(dtype=dtype)
        placement = OneOnDevice(frozen, device, hooked=[n for n in frozen if n != "vae"])
    try:
        parts.vae.eval()
        if placement is not None:
            placement.bring("vae")
        instance = _encode_images(family, parts.vae, data.instance_images, data.resolution, device)
        classes = _encode_images(family, parts.vae, data.class_images, data.resolution, device) if use_prior else None
        prompts = list(dict.fromkeys(data.instance_captions + ([data.class_prompt] if use_prior else [])))
        prompt_tokens = family.tokenize(parts, prompts)
        embeddings = None
        if not params.train_text_encoder:
            with torch.no_grad():
                tokens = {k: v.to(device) for k, v in prompt_tokens.items()}
                embeddings = {k: v.float().cpu() for k, v in family.encode_prompts(parts, tokens).items()}
    finally:
        if placement is not None:
            placement.close()
    return Cache(
        instance,
        classes,
        prompt_tokens,
        embeddings,
        torch.tensor([prompts.index(c) for c in data.instance_captions]),
        prompts.index(data.class_prompt) if use_prior else None,
    )


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return seed * 1_000_003 + step + rank * 2**40


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(_step_seed(seed, step))


def _precision(params: TrainParams, device: torch.device) -> torch.dtype:
    """The frozen weights' dtype; fp16 needs a GPU (CPUs have no fp16 autocast for training)."""
    if params.mixed_precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            "train.mixed_precision 'fp16' needs a CUDA GPU and this run is on the CPU; use 'bf16' or 'no'"
        )
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(params.mixed_precision, torch.float32)


def train(
    data: TrainData, params: TrainParams, out_dir: Path, checkpoints_dir: Path, resume: Resume = "no"
) -> TrainResult:
    from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs
    from accelerate.state import AcceleratorState
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params

    started = time.time()
    use_prior = params.with_prior_preservation
    if use_prior and not data.class_images:
        raise ValueError("train.with_prior_preservation is on but there are no class images; run `prior` first")
    if use_prior:
        _check_class_buckets(data)
    # The process count and timeout are how the run is spread, not what it learns: a checkpoint made with 4
    # processes resumes with 2 (the same global batch and draws; float summation order aside).
    inputs_sha = sha256_json({"data": data.fingerprint(), "params": params.model_dump(mode="json", exclude=_HOW)})
    folder = resolve_model(data.base_model)
    family = family_for(folder)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weight_dtype = _precision(params, device)
    apply_threads(params)
    check_memory_options(params, device)  # before minutes of loading: 8-bit and quantized need CUDA
    loss_options = LossOptions.of(params)
    family.check_loss_options(loss_options)
    # accelerate keeps one precision per process; a second run in this process (tests, benchmarks,
    # experiments) may ask for another, so the per-run part of its state starts afresh.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=device.type == "cpu",  # processes without GPUs join over gloo (GPUs: NCCL, one GPU per process)
        mixed_precision=params.mixed_precision,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        # batch_size is the global batch, split across the processes: the LR schedule steps once per step.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        # A rank that waits this long in a collective (a peer hung or died) fails instead of hanging.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=params.ddp_timeout_s))],
    )
    if accelerator.num_processes != params.num_processes:
        raise ConfigError(
            f"train.num_processes is {params.num_processes} but this run has {accelerator.num_processes} "
            f"process(es): run `conceptlab train`, which launches train.num_processes of them"
        )
    device = accelerator.device
    shard = Shard(accelerator.process_index, accelerator.num_processes)
    is_main = accelerator.is_main_process

    # 1. The frozen VAE and text encoders: the pipeline without its denoiser, which loads only once the
    # cache is built and they have left the device (with base_quantization, straight onto the GPU), so
    # under offload_frozen cpu/free T5 is never on the GPU beside the transformer.
    quantization = quantization_config(params, weight_dtype)
    load_dtype = weight_dtype if quantization is not None else torch.float32
    parts = family.parts(family.load_pipeline(folder, load_dtype, "cpu", without_denoiser=True))

    def to_device(module: torch.nn.Module) -> None:  # LoRA weights in float32, the frozen ones in weight_dtype
        if is_quantized(module):  # bitsandbytes weights keep their dtype; the LoRA layers follow the device
            module.to(device)
        else:
            module.to(device, dtype=weight_dtype)
        cast_training_params([module], dtype=torch.float32)

    # 2. Cache: VAE latents of every image and text conditioning of every prompt, computed once by the
    # frozen VAE and text encoders (trained text encoders run every step instead); they then leave the
    # device (offload_frozen cpu/free) or stay (none).
    cache = _build_cache(family, parts, data, params, device, weight_dtype)
    release_frozen(parts, params.offload_frozen, text_encoders_cached=cache.prompt_embeddings is not None)

    # 3. The denoiser, then LoRA (its A matrices drawn here, on the CPU unless the base is quantized).
    parts.denoiser = family.load_denoiser(folder, load_dtype, quantization)
    torch.manual_seed(params.seed)
    trainable = add_lora(family, parts, params)
    adapters = adapted(parts)  # the modules that carry LoRA, unwrapped: what checkpoints and the adapter save
    for module in adapters.values():
        to_device(module)
    if params.gradient_checkpointing:
        parts.denoiser.enable_gradient_checkpointing()
        for name, module in adapters.items():
            if name != parts.denoiser_name:
                module.gradient_checkpointing_enable()

    prepare_denoiser(parts.denoiser, params)
    if use_compile(params, device):
        compiled(parts.denoiser)

    # 4. Optimiser and schedule.
    optimizer = _optimizer(params, adapters, parts.denoiser_name)
    lr_scheduler = get_scheduler(
        params.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=params.lr_warmup_steps,
        num_training_steps=params.max_steps,
    )
    parts.denoiser, optimizer, lr_scheduler = accelerator.prepare(parts.denoiser, optimizer, lr_scheduler)
    config_hash = inputs_sha

    # 5. Resume from the latest checkpoint when asked; every process loads the one the main process found.
    start_step, losses, resumed_from = 0, [], None
    ckpt = latest_checkpoint(checkpoints_dir) if resume != "no" else None
    ckpt = _main_process_value(accelerator, ckpt)
    if ckpt is not None:
        try:
            start_step, losses = load_checkpoint(ckpt, adapters, optimizer, lr_scheduler, config_hash)
            resumed_from = start_step
        except CheckpointMismatch:
            if resume == "yes":
                raise
            ckpt = None  # auto: the inputs changed since that checkpoint, so it is not this run's
    accelerator.wait_for_everyone()  # no process still reads a checkpoint that is deleted next
    if ckpt is None and is_main:
        shutil.rmtree(checkpoints_dir, ignore_errors=True)

    # 6. The loop.
    models = Models(family, parts, device, weight_dtype, loss_options)
    for module in adapters.values():
        module.train()
    loop_started = time.time()
    step_times = []
    outside_ddp = [p for name, m in adapters.items() if name != parts.denoiser_name for p in m.parameters()]
    outside_ddp = [p for p in outside_ddp if p.requires_grad]  # text-encoder LoRA: averaged by hand below
    bar = tqdm(
        range(start_step, params.max_steps), desc="train", unit="step", leave=False, **({} if is_main else _QUIET)
    )
    for step in bar:
        step_started = time.perf_counter()
        torch.manual_seed(_step_seed(params.seed, step, shard.index))  # LoRA dropout: the global RNG, per rank
        g = _step_generator(params.seed, step)
        step_losses = []
        for _ in range(params.gradient_accumulation_steps):
            with accelerator.accumulate(parts.denoiser):
                loss, parts_of_loss = _loss(g, params, models, cache, shard)
                parts_of_loss = accelerator.reduce(parts_of_loss, "mean")  # the whole batch's; same on every rank
                if not torch.isfinite(parts_of_loss[0]):
                    raise TrainingDiverged(
                        f"loss became {parts_of_loss[0].item()} at step {step}; lower train.learning_rate "
                        f"(now {params.learning_rate}) or use mixed_precision 'bf16'/'no'. "
                        f"Checkpoints so far are in {checkpoints_dir}."
                    )
                accelerator.backward(loss)  # DDP averages the denoiser's gradients over the processes
                if accelerator.sync_gradients:
                    _average_gradients(accelerator, outside_ddp)
                    accelerator.clip_grad_norm_(trainable, params.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_losses.append(parts_of_loss.tolist())
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
        step_times.append(time.perf_counter() - step_started)
        done = step + 1
        if done % params.checkpoint_every == 0 and done < params.max_steps and is_main:
            save_checkpoint(
                checkpoints_dir,
                done,
                lora_state(adapters),
                optimizer,
                lr_scheduler,
                losses,
                config_hash,
                params.checkpoints_total_limit,
            )

    loop_seconds = time.time() - loop_started

    # 7. Outputs, by the main process once every process has finished every step (a run with a failed
    # process writes none), under a temporary name: a partial adapter never appears in out_dir.
    accelerator.wait_for_everyone()
    parts.denoiser = accelerator.unwrap_model(parts.denoiser)
    if not is_main:
        accelerator.wait_for_everyone()
        return TrainResult.read(out_dir / "train.json")
    staging = new_staging_dir(out_dir)
    params_dump = params.model_dump(mode="json")
    adapter = save_adapter(staging, family, parts)
    _write_loss_curve(staging / "loss.csv", losses)
    write_json(
        staging / "train_config.json",
        {
            "params": params.model_dump(mode="json"),
            "family": family.name,
            "lora_targets": {n: sorted(m.peft_config["default"].target_modules) for n, m in adapters.items()},
            "base_model": model_identity(data.base_model),
            "resolution": data.resolution,
            "instance_images": [i.path.name for i in data.instance_images],
            "instance_captions": data.instance_captions,
            "class_prompt": data.class_prompt,
            "class_images": len(data.class_images),
            "inputs_sha256": inputs_sha,
            "loss_options": {
                "family": family.name,
                "prediction": getattr(parts.scheduler.config, "prediction_type", None) or "flow_velocity",
                **asdict(loss_options),
            },
            "memory_options": {k: params_dump[k] for k in MEMORY_KEYS},
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
        step_seconds=round(float(np.median(step_times)), 5) if step_times else math.nan,
        inputs_sha256=inputs_sha,
    )
    result.write(staging / "train.json")
    publish(staging, out_dir)
    accelerator.wait_for_everyone()
    return result


def _loss(g: torch.Generator, params: TrainParams, m: Models, cache: Cache, shard: Shard):
    """One micro-batch: instance images, plus as many class images when prior preservation is on.
    Returns the loss of this process's rows and, detached, (loss, instance loss, prior loss).

    Every draw is made for the whole batch, in one order, so the batch is the same whatever the process
    count; this process then computes only its shard of the rows (instance rows and their class rows)."""
    b = params.batch_size
    idx = cache.instance.draw(b, g)  # one bucket per batch: every row has one shape
    flip = torch.rand(b, generator=g) < 0.5 if params.flip_augment else torch.zeros(b, dtype=torch.bool)
    latents = cache.instance.sample(idx, flip, g)
    image_cond = cache.instance.conditioning_at(idx, flip)
    prompt_rows = cache.instance_prompt[idx]
    if cache.classes is not None:
        cidx = cache.classes.draw(b, g, cache.instance.sizes[int(idx[0])])
        cflip = torch.rand(b, generator=g) < 0.5 if params.flip_augment else torch.zeros(b, dtype=torch.bool)
        latents = torch.cat([latents, cache.classes.sample(cidx, cflip, g)])
        class_cond = cache.classes.conditioning_at(cidx, cflip)
        image_cond = {k: torch.cat([v, class_cond[k]]) for k, v in image_cond.items()}
        prompt_rows = torch.cat([prompt_rows, torch.full((b,), cache.class_prompt)])
    noise = torch.randn(latents.shape, generator=g)
    noised = m.family.noisy_input(m.parts.scheduler, latents, noise, g, m.loss_options)
    rows = shard.rows(b)
    n = len(rows)  # instance rows here; as many class rows follow them
    if cache.classes is not None:
        rows = torch.cat([rows, rows + b])
    prompt_rows, image_cond = prompt_rows[rows], {k: v[rows] for k, v in image_cond.items()}
    if cache.prompt_embeddings is not None:
        prompt = {k: v[prompt_rows].to(m.device, m.dtype) for k, v in cache.prompt_embeddings.items()}
    else:
        prompt = m.family.encode_prompts(
            m.parts, {k: v[prompt_rows].to(m.device) for k, v in cache.prompt_tokens.items()}
        )
    image = {k: v.to(m.device) for k, v in image_cond.items()}
    pred = m.family.predict(
        m.parts, noised.noisy[rows].to(m.device, m.dtype), noised.timesteps[rows].to(m.device), prompt, image
    ).float()
    target = noised.target[rows].to(m.device)
    weights = None if noised.weights is None else noised.weights[rows].to(m.device)
    if cache.classes is None:
        loss = _mse(pred, target, weights)
        return loss, torch.stack([loss, loss, torch.zeros_like(loss)]).detach()
    inst = _mse(pred[:n], target[:n], None if weights is None else weights[:n])
    prior = _mse(pred[n:], target[n:], None if weights is None else weights[n:])
    loss = inst + params.prior_loss_weight * prior
    return loss, torch.stack([loss, inst, prior]).detach()


def _mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error; with per-row weights, the mean over rows of weight x the row's mean error."""
    if weights is None:
        return F.mse_loss(pred, target)
    per_row = F.mse_loss(pred, target, reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (weights * per_row).mean()


# Train params that spread a run or place its frozen weights, not what it computes: a checkpoint resumes
# under other values of these.
_HOW = {"num_processes", "ddp_timeout_s", "offload_frozen"}
MEMORY_KEYS = ("optimizer", "base_quantization", "offload_frozen", "gradient_checkpointing", "mixed_precision")
_QUIET = {"disable": True}  # one progress bar: the main process's


def _main_process_value(accelerator, value):
    """``value`` as the main process has it, on every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def _average_gradients(accelerator, params: list[torch.nn.Parameter]) -> None:
    """The mean gradient over the processes, for trainable weights outside the DDP-wrapped denoiser
    (text-encoder LoRA); DDP does the same for the denoiser's during backward."""
    if accelerator.num_processes == 1:
        return
    for p in params:
        if p.grad is not None:
            p.grad.copy_(accelerator.reduce(p.grad, "mean"))


def _optimizer(params: TrainParams, adapters: dict[str, torch.nn.Module], denoiser_name: str):
    """AdamW over the LoRA weights: the denoiser's at learning_rate, text encoders' at their own rate."""
    groups = [
        {
            "params": [p for p in module.parameters() if p.requires_grad],
            "lr": params.learning_rate if name == denoiser_name else params.text_encoder_learning_rate,
        }
        for name, module in adapters.items()
    ]
    kwargs = dict(
        betas=(params.adam_beta1, params.adam_beta2), weight_decay=params.adam_weight_decay, eps=params.adam_epsilon
    )
    if params.optimizer == "adamw_8bit":
        check_memory_options(params, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs, **adamw_kwargs(params))


def _write_loss_curve(path: Path, losses: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss", "instance_loss", "prior_loss", "lr"])
        writer.writeheader()
        writer.writerows(losses)
