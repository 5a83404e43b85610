"""Validated configuration: stage defaults from params.yaml, one small YAML file per concept.

Every model forbids unknown keys, so a typo is an error that names the file and the key instead of a
silently ignored setting. A concept's ``overrides`` are merged over params.yaml before validation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEDULERS = ("ddim", "ddpm", "pndm", "euler", "euler_a", "dpmpp_2m", "lms")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurateParams(_Strict):
    min_side: int = Field(64, ge=8, description="reject photos whose shorter side is below this (px)")
    max_pixels: int = Field(80_000_000, ge=1, description="reject larger images as decompression bombs")
    near_duplicate_distance: int = Field(4, ge=0, le=64, description="pHash Hamming distance for near dups")
    min_images: int = Field(3, ge=1, description="refuse to continue with fewer accepted photos")
    max_images: int = Field(200, ge=1)
    crop: Literal["center", "pad"] = "center"
    aspect_buckets: Literal["square", "auto"] | list[tuple[int, int]] = Field(
        "square",
        description="training sizes: 'square' (resolution x resolution), 'auto' (SDXL/Flux-style buckets "
        "of about resolution² pixels, aspects 1:4 to 4:1) or a list of [width, height]; each photo gets the "
        "bucket nearest its aspect",
    )

    @field_validator("aspect_buckets")
    @classmethod
    def _buckets_fit_the_vae(cls, v):
        if isinstance(v, str):
            return v
        if not v:
            raise ValueError("an empty bucket list; use 'square', 'auto' or a list of [width, height]")
        for w, h in v:
            if w < 8 or h < 8 or w % 8 or h % 8:
                raise ValueError(f"bucket [{w}, {h}]: width and height must be multiples of 8 (the VAE's factor)")
        return v


class CaptionParams(_Strict):
    captioner: Literal["template", "vlm"] = "template"
    template: str = "a photo of {token} {class_noun}"
    vlm_model: str = "tiny-blip"
    max_new_tokens: int = Field(20, ge=1, le=200)

    @field_validator("template")
    @classmethod
    def _template_names_token(cls, v: str) -> str:
        if "{token}" not in v:
            raise ValueError("template must contain {token} (the instance identifier)")
        return v


class GenerationParams(_Strict):
    scheduler: Literal[SCHEDULERS] = "ddim"  # type: ignore[valid-type]
    steps: int = Field(25, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=0)
    negative_prompt: str = ""
    batch_size: int = Field(4, ge=1)


class PriorParams(GenerationParams):
    num_images: int = Field(8, ge=1)
    prompt: str = "a photo of a {class_noun}"
    seed: int = 0


class TrainParams(_Strict):
    seed: int = 0
    max_steps: int = Field(400, ge=1)
    batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, ge=0)
    text_encoder_learning_rate: float = Field(5e-6, ge=0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    rank: int = Field(4, ge=1)
    alpha: float = Field(4.0, gt=0, description="LoRA alpha; the update is scaled by alpha/rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        None, description="denoiser modules that get LoRA; None: the model family's attention projections"
    )
    train_text_encoder: bool = False
    text_encoder_rank: int = Field(4, ge=1)
    with_prior_preservation: bool = True
    prior_loss_weight: float = Field(1.0, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    optimizer: Literal["adamw", "adamw_8bit"] = Field(
        "adamw", description="adamw_8bit: bitsandbytes' 8-bit AdamW states (a CUDA GPU and the `gpu` extra)"
    )
    max_grad_norm: float = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(100, ge=1)
    checkpoints_total_limit: int = Field(2, ge=1)
    base_quantization: Literal["none", "nf4", "int8"] = Field(
        "none", description="load the frozen denoiser in bitsandbytes NF4/int8 (CUDA); LoRA weights stay fp32"
    )
    offload_frozen: Literal["none", "cpu", "free"] = Field(
        "cpu",
        description="VAE and frozen text encoders: while caching, on the device all together (none) or one at "
        "a time (cpu, free); after caching they stay on the device (none), move to the CPU (cpu) or are deleted (free)",
    )
    snr_gamma: float | None = Field(
        None, gt=0, description="min-SNR-gamma loss weighting (U-Net families, epsilon and v targets); None: off"
    )
    noise_offset: float = Field(0.0, ge=0, description="per-channel noise offset (U-Net families); 0: off")
    timestep_density: Literal["auto", "uniform", "logit_normal", "mode"] = Field(
        "auto", description="flow matching: the density noise levels are drawn from; auto: the family's own"
    )
    timestep_logit_mean: float = Field(0.0, description="logit_normal density: mean of the logit")
    timestep_logit_std: float = Field(1.0, gt=0, description="logit_normal density: std of the logit")
    timestep_mode_scale: float = Field(1.29, description="mode density: its scale (SD3 paper)")
    timestep_shift: float | Literal["auto"] = Field(
        "auto", description="flow matching: noise-level shift s; auto: the model scheduler's own shift"
    )
    flip_augment: bool = Field(True, description="random horizontal flip (on cached latents)")
    num_processes: int = Field(
        1,
        ge=1,
        description="data-parallel training processes (DDP): one per GPU (NCCL), or CPU processes (gloo); "
        "each takes batch_size / num_processes rows of every batch",
    )
    ddp_timeout_s: int = Field(
        600, ge=1, description="with num_processes > 1: a rank that waits this long for the others fails the run"
    )
    # Speed options (components/train_speedups.py; measured by benchmarks/train_speed.py).
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the denoiser; auto: only where measured to win over max_steps"
    )
    optimizer_impl: Literal["auto", "for_loop", "foreach", "fused"] = Field(
        "auto", description="torch AdamW implementation; auto: torch's own choice for the device"
    )
    channels_last: bool = Field(False, description="denoiser weights and activations in channels-last memory format")
    attention: Literal["sdpa", "classic"] = Field(
        "sdpa", description="denoiser attention: sdpa (torch scaled_dot_product_attention) or classic (matmuls)"
    )
    num_threads: int | Literal["auto"] = Field("auto", description="torch intra-op threads; auto: torch's own")
    interop_threads: int | Literal["auto"] = Field("auto", description="torch inter-op threads; auto: torch's own")

    @field_validator("num_threads", "interop_threads")
    @classmethod
    def _threads_positive(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be 'auto' or a whole number >= 1")
        return v

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no_is_not_false(cls, v):
        # `dvc exp run -S` rewrites params.yaml without quotes, and YAML 1.1 reads a bare `no` as false.
        return "no" if v is False else v

    @field_validator("timestep_shift")
    @classmethod
    def _shift_is_positive(cls, v):
        if v != "auto" and not v > 0:
            raise ValueError("timestep_shift must be 'auto' or a number > 0")
        return v

    @model_validator(mode="after")
    def _batch_splits_evenly(self):
        # Equal shards: the mean of the ranks' mean losses (what DDP's gradient average optimises) is then
        # the mean over the whole batch, as in one process.
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"batch_size {self.batch_size} (the global batch) must be a multiple of num_processes "
                f"{self.num_processes}: each process takes an equal share of every batch"
            )
        return self


class EvalParams(GenerationParams):
    clip_model: str = "tiny-clip"
    prompts: list[str] = [
        "a photo of {instance}",
        "{instance} in the jungle",
        "{instance} on the beach",
        "{instance} on top of a wooden table",
        "a red {instance}",
    ]
    class_prompts: list[str] = ["a photo of a {class_noun}", "a {class_noun} in the snow"]
    seeds: list[int] = [0, 1, 2]


class RegisterParams(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "conceptlab"
    alias: str = "challenger"


class PromotionParams(_Strict):
    """The promotion gate: the challenger against the champion (or the base model when there is none),
    on the same evaluation prompts and seeds."""

    min_clip_i_gain: float = Field(
        0.02, description="CLIP-I over the base model's, at least: an adapter that learned nothing is refused"
    )
    clip_i_margin: float = Field(0.01, ge=0, description="CLIP-I may be at most this much below the reference")
    clip_t_margin: float = Field(0.01, ge=0, description="CLIP-T may be at most this much below the reference")
    max_prior_drift: float = Field(0.25, ge=0, description="class-prompt drift from the base model, at most")
    confidence: float = Field(
        0.95, gt=0, lt=1, description="each gated number's interval (paired bootstrap) must clear the rule"
    )
    bootstrap_resamples: int = Field(2000, ge=100, description="bootstrap resamples per interval")


class Params(_Strict):
    concepts: list[str] = Field([], description="concept folders under concepts/ that DVC and retrain run")
    resolution: int | None = Field(None, ge=8, description="None: the base model's native resolution")
    curate: CurateParams = CurateParams()
    caption: CaptionParams = CaptionParams()
    prior: PriorParams = PriorParams()
    train: TrainParams = TrainParams()
    evaluate: EvalParams = EvalParams()
    registry: RegisterParams = RegisterParams()
    promotion: PromotionParams = PromotionParams()


class Concept(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="registry name; lowercase, dashes")
    class_noun: str = Field(min_length=1)
    instance_token: str = Field("sks", min_length=1)
    base_model: str = "tiny-sd"
    photos: str = Field(description="folder, .zip/.tar archive, or s3://bucket/prefix of raw photos")
    overrides: dict[str, Any] = {}

    @property
    def instance_phrase(self) -> str:
        return f"{self.instance_token} {self.class_noun}"


class ResolvedConfig(_Strict):
    concept: Concept
    params: Params
    concept_file: Path
    params_file: Path | None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _explain(path: Path, exc: ValidationError, prefix: str = "") -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        hint = " (unknown key: check its spelling or remove it)" if err["type"] == "extra_forbidden" else ""
        lines.append(f"{path}: key '{prefix}{key}': {err['msg']}{hint}")
    return ConfigError("\n".join(lines))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params(params_file: Path | None, overrides: dict[str, Any] | None = None) -> Params:
    raw = _read_yaml(params_file) if params_file else {}
    try:
        Params.model_validate(raw)
    except ValidationError as exc:
        raise _explain(params_file or Path("params.yaml"), exc) from exc
    return Params.model_validate(deep_merge(raw, overrides or {}))


def load_concept(concept_file: Path) -> Concept:
    raw = _read_yaml(concept_file)
    try:
        concept = Concept.model_validate(raw)
    except ValidationError as exc:
        raise _explain(concept_file, exc) from exc
    if concept.photos.startswith("s3://"):
        return concept
    photos = Path(concept.photos).expanduser()
    photos = photos if photos.is_absolute() else concept_file.parent / photos
    if not photos.exists():
        raise ConfigError(
            f"{concept_file}: key 'photos': {photos} does not exist; point it at a folder, .zip or .tar of photos"
        )
    return concept.model_copy(update={"photos": str(photos.resolve())})


def load_config(concept_file: Path, params_file: Path | None = Path("params.yaml")) -> ResolvedConfig:
    """Concept file + params.yaml (+ the concept's overrides), validated; errors name file and key."""
    concept = load_concept(concept_file)
    if params_file is not None and not params_file.exists():
        raise ConfigError(f"{params_file}: file not found (pass --params or create it)")
    load_params(params_file)  # params.yaml alone must be valid: errors blame the right file
    try:
        params = load_params(params_file, concept.overrides)
    except ValidationError as exc:
        raise _explain(concept_file, exc, prefix="overrides.") from exc
    return ResolvedConfig(concept=concept, params=params, concept_file=concept_file, params_file=params_file)
