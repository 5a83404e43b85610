"""The seam between conceptlab's stages and a model family (SD1.x/2.x, SDXL, Flux, SD3, ...).

Families differ in a few places only: which pipeline class generates, which parts are frozen, how a
prompt becomes conditioning, what each image adds to it, how cached latents become the noisy input
and the loss target, and how the denoiser is called. A ``Family`` says exactly those things; the
stages (curate, caption, prior, train, evaluate, register, promote) call it and never name a family
or a pipeline class themselves.

Adding a family = one module + its tiny builder + its tests:
  1. ``components/families/<name>.py``: a ``Family`` subclass (class attributes for the names, the
     four abstract methods, overrides where a default does not fit), listed in ``FAMILIES``;
  2. a tiny random-weight builder in ``components/tiny_models.py`` (real classes, real tokenizer
     vocabularies where a package ships them);
  3. tests that a few training steps give an adapter the family's pipeline loads, that changes the
     output, reloads exactly, evaluates and registers (see ``tests/model/test_families.py``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class TrainImage:
    """A training image and where it came from: SDXL-style models condition on the original size, on
    the crop (``crop_box`` in original pixels, left/top/right/bottom; None: nothing was cut) and on the
    size it trains at (its aspect bucket)."""

    path: Path
    original_size: tuple[int, int]  # width, height of the photo before curation
    crop_box: tuple[float, float, float, float] | None = None
    bucket: tuple[int, int] | None = None  # width, height it trains at; None: square at the training resolution

    def target_size(self, resolution: int) -> tuple[int, int]:
        return self.bucket or (resolution, resolution)


@dataclass
class Parts:
    """The frozen model parts training needs, by the names the family's pipeline gives them."""

    denoiser_name: str  # "unet" or "transformer": the pipeline attribute, and the adapter's key prefix
    denoiser: torch.nn.Module | None  # None while training builds its cache (the denoiser loads after)
    text_encoders: dict[str, torch.nn.Module]  # "text_encoder", "text_encoder_2", ...
    tokenizers: dict[str, Any]  # keyed like the text encoder each one feeds
    vae: torch.nn.Module | None  # None once training has cached the latents and dropped it (offload_frozen: free)
    scheduler: Any  # the training noise scheduler

    def adaptable(self) -> dict[str, torch.nn.Module]:
        """The modules LoRA may go into, by name: the denoiser first, then the text encoders."""
        return {self.denoiser_name: self.denoiser, **self.text_encoders}

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.denoiser, *self.text_encoders.values(), self.vae) if m is not None]


@dataclass
class Noised:
    """One step's denoiser input and the loss target, from clean latents and noise."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None = None  # per-row loss weights (min-SNR-gamma); None: every row weighs 1


@dataclass(frozen=True)
class LossOptions:
    """The train.* keys that shape the noise and the loss (params.yaml documents each). A family uses
    those that apply to it and refuses, naming the key, those that do not (``check_loss_options``)."""

    snr_gamma: float | None = None
    noise_offset: float = 0.0
    timestep_density: str = "auto"
    timestep_logit_mean: float = 0.0
    timestep_logit_std: float = 1.0
    timestep_mode_scale: float = 1.29
    timestep_shift: float | str = "auto"

    @classmethod
    def of(cls, params) -> LossOptions:
        """The loss options of a TrainParams (or anything with these attributes)."""
        return cls(**{f: getattr(params, f) for f in cls.__dataclass_fields__})


# LoRA targets inside text encoders, by transformers model_type (attention projections).
TEXT_ENCODER_TARGETS = {
    "clip_text_model": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "t5": ["q", "k", "v", "o"],
}

# Text encoders whose LoRA diffusers' load_lora_weights cannot read back (it maps text-encoder keys by
# CLIP's layer names only): training one would save an adapter that evaluate, generate and the registry
# model cannot load, so it is refused before training.
UNLOADABLE_TEXT_ENCODER_LORA = {"bert": "BERT (as in Taiyi)"}

_SAMPLERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}


class Family(ABC):
    """One model family. Class attributes name things; methods do the few family-specific steps."""

    name: ClassVar[str]  # short id, recorded with the adapter ("sd", "sdxl", ...)
    pipeline: ClassVar[str]  # the diffusers pipeline class = model_index.json's _class_name
    denoiser_name: ClassVar[str] = "unet"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tokenizer_names: ClassVar[tuple[str, ...]] = ("tokenizer",)
    default_lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0")
    pipeline_kwargs: ClassVar[dict[str, Any]] = {}  # extra from_pretrained arguments
    kohya_prefixes: ClassVar[dict[str, str] | None] = None  # component -> kohya key prefix; None: no format
    # Adapter keys in diffusers' older lora.down/lora.up names (what the U-Net pipelines' scripts save);
    # False: PEFT's lora_A/lora_B names, which transformer pipelines (SD3) need to load every module.
    convert_lora_keys: ClassVar[bool] = True

    # -- recognise and generate ----------------------------------------------------------------

    def pipeline_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline)

    def load_pipeline(
        self, folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu", without_denoiser: bool = False
    ):
        """The pipeline on ``device``; ``without_denoiser`` skips loading the denoiser (its attribute is
        None): training caches with the VAE and text encoders first and loads it after (``load_denoiser``)."""
        skip = {self.denoiser_name: None} if without_denoiser else {}
        pipe = self.pipeline_class().from_pretrained(folder, dtype=dtype, **self.pipeline_kwargs, **skip)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def load_denoiser(self, folder: Path, dtype: torch.dtype = torch.float32, quantization_config=None):
        """The denoiser alone, on the CPU; with a diffusers ``BitsAndBytesConfig`` its Linear weights load
        quantized, straight onto the current GPU (bitsandbytes places them there)."""
        import diffusers

        _, class_name = json.loads((folder / "model_index.json").read_text())[self.denoiser_name]
        extra = {} if quantization_config is None else {"quantization_config": quantization_config}
        return getattr(diffusers, class_name).from_pretrained(
            folder, subfolder=self.denoiser_name, dtype=dtype, **extra
        )

    def native_resolution(self, folder: Path) -> int:
        """The pixel size the checkpoint was trained at: denoiser sample size x VAE downsampling."""
        denoiser = json.loads((folder / self.denoiser_name / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        return int(denoiser["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)

    def guidance_kwargs(self, pipe, guidance_scale: float, negative_prompt: str | None, batch: int) -> dict[str, Any]:
        """The pipeline call's arguments for classifier-free guidance at ``guidance_scale`` for ``batch``
        prompts, with ``negative_prompt`` (None or empty: the pipeline's unconditional prompt)."""
        return {
            "guidance_scale": guidance_scale,
            "negative_prompt": [negative_prompt] * batch if negative_prompt else None,
        }

    def set_sampler(self, pipe, sampler: str) -> None:
        """Swaps the sampler, keeping the base model's noise schedule and prediction type."""
        import diffusers

        if sampler not in _SAMPLERS:
            raise ValueError(f"sampler {sampler!r}: {self.name} models take one of {', '.join(_SAMPLERS)}")
        pipe.scheduler = getattr(diffusers, _SAMPLERS[sampler]).from_config(pipe.scheduler.config)

    # -- training ------------------------------------------------------------------------------

    def parts(self, pipe) -> Parts:
        """The frozen parts of a loaded pipeline, with the family's training noise scheduler."""
        return Parts(
            denoiser_name=self.denoiser_name,
            denoiser=getattr(pipe, self.denoiser_name),
            text_encoders={n: getattr(pipe, n) for n in self.text_encoder_names},
            tokenizers=dict(
                zip(self.text_encoder_names, (getattr(pipe, n) for n in self.tokenizer_names), strict=True)
            ),
            vae=pipe.vae,
            scheduler=self.training_scheduler(pipe.scheduler),
        )

    @abstractmethod
    def training_scheduler(self, pipeline_scheduler):
        """The noise scheduler training draws from, made from the pipeline's scheduler config."""

    def tokenize(self, parts: Parts, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids per text encoder (padded to the tokenizer's length): what encode_prompts reads."""
        return {
            name: tok(
                prompts, padding="max_length", truncation=True, max_length=tok.model_max_length, return_tensors="pt"
            ).input_ids
            for name, tok in parts.tokenizers.items()
        }

    @abstractmethod
    def encode_prompts(self, parts: Parts, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Conditioning tensors per prompt (first dimension: prompt), e.g. {"hidden": ..., "pooled": ...}.
        Cached once when the text encoders are frozen; run every step when they train."""

    def image_conditioning(self, image: TrainImage, resolution: int, flipped: bool) -> dict[str, torch.Tensor]:
        """What a training image adds to the conditioning besides its latents (SDXL: time ids)."""
        return {}

    @abstractmethod
    def noisy_input(
        self, scheduler, latents: torch.Tensor, noise: torch.Tensor, g: torch.Generator, options: LossOptions
    ) -> Noised:
        """Draws timesteps (and any other randomness the options ask for) from ``g`` and returns the noisy
        latents, the loss target and, where the options weight rows, the per-row loss weights."""

    def check_loss_options(self, options: LossOptions) -> None:
        """Raises ConfigError naming the train key of an option this family cannot apply. A family that
        does not override this applies none of them: any key off its default is refused."""
        from components.config import ConfigError

        for key, default in LossOptions().__dict__.items():
            if getattr(options, key) != default:
                raise ConfigError(f"train.{key}: the {self.name} family does not apply it; leave it at {default!r}")

    @abstractmethod
    def predict(
        self,
        parts: Parts,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        prompt: dict[str, torch.Tensor],
        image: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The denoiser's output for a batch, shaped like the target."""

    # -- the adapter ---------------------------------------------------------------------------

    def lora_targets(self, parts: Parts, target_modules: list[str] | None, train_text_encoder: bool):
        """Module names that get LoRA, by component: the denoiser always, text encoders optionally."""
        targets = {self.denoiser_name: list(target_modules or self.default_lora_targets)}
        if train_text_encoder:
            for name, encoder in parts.text_encoders.items():
                model_type = encoder.config.model_type
                if model_type in UNLOADABLE_TEXT_ENCODER_LORA:
                    from components.config import ConfigError

                    raise ConfigError(
                        f"train.train_text_encoder: this base's {name} is {UNLOADABLE_TEXT_ENCODER_LORA[model_type]}, "
                        "whose LoRA diffusers' load_lora_weights cannot load back (it reads CLIP's layer names only), "
                        "so evaluate and generate could not use the adapter; set train.train_text_encoder: false "
                        "(the denoiser's LoRA learns the concept)"
                    )
                if model_type not in TEXT_ENCODER_TARGETS:
                    raise ValueError(f"train_text_encoder: no LoRA targets known for {name} type {model_type!r}")
                targets[name] = TEXT_ENCODER_TARGETS[model_type]
        return targets

    def kohya_state(self, peft_state: dict[str, torch.Tensor], alphas: dict[str, float]) -> dict | None:
        """The adapter in kohya's key format (what ComfyUI/A1111 load), or None where the family has none.

        ``peft_state`` keys are "<component>.<peft key>"; ``alphas`` is each component's LoRA alpha."""
        if self.kohya_prefixes is None:
            return None
        from diffusers.utils import convert_state_dict_to_kohya

        out = {}
        for component, prefix in self.kohya_prefixes.items():
            part = {k: v for k, v in peft_state.items() if k.startswith(component + ".")}
            if not part:
                continue
            # diffusers names every text encoder lora_te1/lora_te2 and the U-Net lora_unet; kohya's own
            # prefix depends on the family (SD1.x: lora_te), so each component is renamed here.
            renamed = {"unet." + k[len(component) + 1 :]: v for k, v in part.items()}
            for key, value in convert_state_dict_to_kohya(renamed).items():
                key = prefix + key.removeprefix("lora_unet")
                # diffusers' converter writes alpha = rank; the adapter's real alpha is what tools apply.
                out[key] = torch.tensor(alphas[component], dtype=torch.float32) if key.endswith(".alpha") else value
        return out
