"""The toy world's model card (models/README.md), written from the build's own measurements."""

from __future__ import annotations

import json
from pathlib import Path


def model_card(report: dict) -> str:
    m = report["metrics"]
    rows = "\n".join(
        f"| {name} | {m['clip_zero_shot_accuracy'][name]:.3f} | {m['prompt_following_accuracy'][name]:.3f} "
        f"| {chance:.3f} |"
        for name, chance in m["chance"].items()
    )
    seconds = report["seconds"]
    sizes = ", ".join(f"`{k}` {v / 1e6:.2f} MB" for k, v in report["weights_bytes"].items())
    held_out = ", ".join(" ".join(c) for c in report["held_out_combinations"])
    settings = m["prompt_following_settings"]
    return f"""# Toy-world models

Models trained from scratch on the toy world (`components/toyworld/`: procedurally rendered
objects that vary in shape, colour, pattern, size, position and background, each with a caption that
says so), so that DreamBooth + LoRA can be measured on a CPU without downloading anything.

- `toyworld-sd/`: a Stable Diffusion pipeline folder (AutoencoderKL 32 px -> 8x8x4 latents,
  UNet2DConditionModel with cross-attention, CLIPTextModel, a CLIP BPE tokenizer cut down to the
  domain's words, DDPMScheduler with SD1.x's schedule). Load it like any checkpoint:
  `StableDiffusionPipeline.from_pretrained("models/toyworld-sd")`, or name it `toyworld-sd`.
- `toyworld-clip/`: an open_clip model in its `local-dir` format (custom config: ViT on 32 px with
  4 px patches, a 2-layer text transformer, the same tokenizer), trained contrastively on the same
  captions. `open_clip.create_model_and_transforms("local-dir:models/toyworld-clip")`, or name it
  `toyworld-clip` in `evaluate.clip_model`.

Weights (safetensors, float32): {sizes}.

## How they were made

```
{report["command"]}
```

Seed {report["config"]["seed"]}; settings in `toyworld-build.json` (`config`). Built on
{report["machine"]["cpu_threads"]} CPU threads ({report["machine"]["platform"]}, torch
{report["machine"]["torch"]}) in **{seconds["total"] / 60:.1f} minutes** (render {seconds["render"]:.0f} s,
VAE {seconds["vae"]:.0f} s, CLIP {seconds["clip"]:.0f} s, Stable Diffusion {seconds["sd"]:.0f} s), then
{seconds["measure"]:.0f} s of measurement. Another machine gives close, not bit-identical, weights.

Held out of the training data (never seen as one object): {held_out}. These are the concept
tasks under `concepts/toy-*`.

## What they can do

| attribute | CLIP zero-shot accuracy (unseen renders) | base model follows the prompt (read by the CLIP) | chance |
|---|---|---|---|
{rows}

Zero-shot: for each of {report["config"]["eval_images"]} freshly rendered images, the true caption
competes with the same caption with that attribute changed to each other value. Prompt following:
{settings["prompts"]} random prompts, one image each ({settings["scheduler"]}, {settings["steps"]} steps,
guidance {settings["guidance_scale"]}), read back the same way; it is bounded by the CLIP's own accuracy.
VAE reconstruction on unseen renders: {m["vae_psnr_db"]:.1f} dB PSNR.

![samples](toyworld-samples.png)

`toyworld-samples.png`: one column per prompt, one row per seed (DDIM, 25 steps, guidance
{settings["guidance_scale"]}). The prompts, left to right, are `SAMPLE_PROMPTS` in
`components/toyworld/build.py`; the ninth is a held-out combination (an orange dotted star).

{taiyi_section(report["bases"]["toyworld-taiyi"]) if "toyworld-taiyi" in report.get("bases", {}) else ""}## Limits

32 px, eight colours, six shapes, four patterns: a world small enough to train in under an hour
on two cores. Numbers measured here say whether conceptlab teaches a concept, keeps prompts
working and preserves the class; they are not comparable with numbers on real photographs.
"""


def taiyi_section(section: dict) -> str:
    """The Taiyi-layout base and the Chinese CLIP (`conceptlab toyworld build --base taiyi`)."""
    m = section["metrics"]
    words = {
        "colour": "颜色",
        "shape": "形状",
        "pattern": "图案",
        "size": "大小",
        "position": "位置",
        "background": "背景",
    }
    # Five columns (the Chinese word too), so the toyworld-sd table above stays the only 4-number one.
    rows = "\n".join(
        f"| {name} | {words[name]} | {m['clip_zero_shot_accuracy'][name]:.3f} | "
        f"{m['prompt_following_accuracy'][name]:.3f} | {chance:.3f} |"
        for name, chance in m["chance"].items()
    )
    seconds = section["seconds"]
    sizes = ", ".join(f"`{k}` {v / 1e6:.2f} MB" for k, v in section["weights_bytes"].items())
    settings = m["prompt_following_settings"]
    machine = section["machine"]
    return f"""## The Chinese toy world: `toyworld-taiyi` and `toyworld-clip-zh`

The same images captioned in Chinese from the same attributes, with a fixed dictionary
(`components/toyworld/chinese.py`): "一个大的紫色格子三角形,在左边,绿色背景".

- `toyworld-taiyi/`: the layout of Taiyi-Stable-Diffusion-Chinese: a StableDiffusionPipeline whose
  text encoder is a `BertModel` with a `BertTokenizer` over Chinese characters (one token per
  character; the domain's characters added to the tiny Chinese vocabulary, so none is `[UNK]`), the
  same U-Net layout as `toyworld-sd`, and `toyworld-sd`'s VAE. Trained from scratch on the Chinese
  captions with `toyworld-sd`'s trainer (`train_sd`, a BERT text-encoder factory). Name it
  `toyworld-taiyi` as a concept's `base_model` (`concepts/toy-zh-triangle`).
- `toyworld-clip-zh/`: transformers' `ChineseCLIPModel` (the architecture of OFA-Sys Chinese-CLIP:
  ViT + BERT text tower) at toy size, saved with `save_pretrained` with its `ChineseCLIPProcessor`:
  the folder layout real Chinese-CLIP checkpoints have, and the code that loads it (`ClipScorer`)
  loads them. Trained with the domain CLIP's contrastive objective on the Chinese captions.
  `conceptlab.json` says it reads Chinese; `evaluate` refuses Chinese prompts with a CLIP that does not.

Weights (safetensors, float32): {sizes}. Built by `{section["command"]}` on {machine["cpu_threads"]} CPU
thread(s) in **{seconds["total"] / 60:.1f} minutes** (CLIP {seconds["clip"]:.0f} s, Stable Diffusion
{seconds["sd"]:.0f} s; settings in `toyworld-build.json`, `bases.taiyi`), then {seconds["measure"]:.0f} s of
measurement, the same as above with Chinese captions and prompts:

| attribute | 中文 | Chinese CLIP zero-shot accuracy (unseen renders) | Taiyi base follows the Chinese prompt (read by the Chinese CLIP) | chance |
|---|---|---|---|---|
{rows}

{settings["prompts"]} random Chinese prompts ({settings["scheduler"]}, {settings["steps"]} steps, guidance
{settings["guidance_scale"]}). `toyworld-taiyi-samples.png`: `SAMPLE_PROMPTS_ZH` in
`components/toyworld/build_taiyi.py` (the prompts above in Chinese), one row per seed.

![samples](toyworld-taiyi-samples.png)

"""


def flux_section(report: dict) -> str:
    """toyworld-flux's part of the card, from its section of toyworld-build.json (``bases``)."""
    flux = report["bases"]["toyworld-flux"]
    m, c, seconds = flux["metrics"], flux["config"], flux["seconds"]
    sd = report["metrics"]["prompt_following_accuracy"]
    rows = "\n".join(
        f"| {name} | {m['prompt_following_accuracy'][name]:.3f} (toyworld-sd {sd[name]:.3f}) | {chance:.3f} |"
        for name, chance in m["chance"].items()
    )
    sched = flux["scheduler"]
    settings = m["prompt_following_settings"]
    return f"""
## toyworld-flux

`toyworld-flux/`: a FluxPipeline folder (FluxTransformer2DModel with {c["double_layers"]} double- and
{c["single_layers"]} single-stream blocks, 4 heads of 32, no guidance embedding as FLUX.1-schnell; CLIPTextModel
for the pooled vector on the domain CLIP tokenizer; T5EncoderModel on a T5 Unigram tokenizer whose whole
words are the domain's; toyworld-sd's VAE, its latents normalised by shift {flux["vae"]["shift"]:.4f}
and scale {flux["vae"]["scale"]:.4f} measured on the renders; FlowMatchEulerDiscreteScheduler). 8x8x4
latents packed in 2x2 patches: 16 image tokens of 16 channels. `FluxPipeline.from_pretrained("models/toyworld-flux")`,
or name it `toyworld-flux`. Weights {flux["weights_bytes"]["toyworld-flux"] / 1e6:.2f} MB.

```
{flux["command"]}
```

Trained from scratch (transformer and both text encoders together, {c["steps"]} steps of {c["batch"]} at
learning rate {c["lr"]}, 10% empty captions for classifier-free guidance, EMA weights) on the same
{c["images"]} renders as toyworld-sd, by the project's own flux family loss (`Flux.noisy_input`: logit-normal
noise levels, velocity target noise - x0): a LoRA trained by `conceptlab train` continues the same objective.
Scheduler: shift {sched["shift"]}, dynamic shifting {"on" if sched["use_dynamic_shifting"] else "off"}: shifting
towards noise pays for images with many correlated tokens (FLUX.1-dev's exp(mu) grows with the token count
from 256 tokens up); at 16 tokens there is nothing to compensate. Built on {flux["machine"]["cpu_threads"]}
CPU thread(s) in **{seconds["total"] / 60:.1f} minutes**, then {seconds["measure"]:.0f} s of measurement.

| attribute | base model follows the prompt (read by the CLIP) | chance |
|---|---|---|
{rows}

Same {settings["prompts"]} prompts and reading as above ({settings["steps"]} Euler steps, true classifier-free
guidance {settings["guidance_scale"]} against the empty prompt: FluxPipeline's `true_cfg_scale`).

![toyworld-flux samples](toyworld-flux-samples.png)
"""


def write_model_card(out_dir: Path) -> Path:
    report = json.loads((out_dir / "toyworld-build.json").read_text())
    path = out_dir / "README.md"
    card = model_card(report)
    if "toyworld-flux" in report.get("bases", {}):
        card += flux_section(report)
    path.write_text(card, encoding="utf-8")
    return path
