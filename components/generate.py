"""Pictures from registered concepts: one loaded base, adapters switched or combined on it, settings kept.

``load_base`` loads a base model once per process; ``generate`` loads each requested adapter into that
pipeline once (named by its sha256), activates exactly the requested ones with their weights through
peft's multi-adapter ``set_adapters`` (the others stay loaded but inactive), and draws one image per
(prompt, seed), each from its own seeded generator, so an image depends on its settings only. With
``fuse`` the active adapters are merged into the base weights for the run (no LoRA cost per step) and
the base weights are restored bit for bit afterwards, so fusing never changes a later picture.
The settings dict records everything needed to draw the same bytes again (``replay``).
The model family is the pipeline's (components/families); nothing here names one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from components.adapters import (
    BaseModelRef,
    GenerationError,
    ResolvedAdapter,
    cache_root,
    default_tracking_uri,
    parse_spec,
    resolve_adapter,
)

__all__ = [
    "BaseModelRef",
    "GenerationError",
    "GenerationResult",
    "ResolvedAdapter",
    "base_load_count",
    "cache_root",
    "default_tracking_uri",
    "generate",
    "load_base",
    "parse_spec",
    "replay",
    "resolve_adapter",
    "validate",
    "write_result",
]

SETTINGS_FORMAT = 1
LIMITS = {"steps": (1, 500), "guidance": (0.0, 50.0), "side": (8, 4096), "weight": (-4.0, 4.0), "images": 256}
DEFAULTS = {"steps": 25, "guidance": 7.5, "sampler": "ddim"}

_BASES: dict[tuple, object] = {}
_LOADS = {"count": 0}
_LOCK = threading.RLock()  # one generation at a time per process: adapters are pipeline state


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: object  # PIL.Image.Image


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    settings: dict  # every setting, the base identity, each adapter's sha256 and weight
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)


def base_load_count() -> int:
    """How many times this process has loaded a base model (a swap must not add one)."""
    return _LOADS["count"]


def load_base(base: BaseModelRef, device: str | None = None, dtype: str = "float32"):
    """The base model's pipeline (its family's class), loaded once per process and device/dtype."""
    import torch

    from components.base_model import default_device
    from components.families import family_for

    device = device or default_device()
    key = (str(base.path), base.sha256, device, dtype)
    with _LOCK:
        if key not in _BASES:
            pipe = family_for(base.path).load_pipeline(base.path, getattr(torch, dtype), device)
            pipe._conceptlab = {"loaded": {}, "scheduler": pipe.scheduler, "base": base, "dtype": dtype}
            _BASES[key] = pipe
            _LOADS["count"] += 1
        return _BASES[key]


def validate(
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    guidance: float,
    width: int | None,
    height: int | None,
    adapters: Sequence[tuple[ResolvedAdapter, float]] = (),
) -> None:
    """Refuses what cannot make sense, with one message a person can act on (the UI shows it)."""
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise GenerationError("prompt: empty; write what the picture should show")
    if any(len(p) > 2000 for p in prompts):
        raise GenerationError("prompt: longer than 2000 characters")
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63 for s in seeds):
        raise GenerationError("seed: give whole numbers from 0 to 2^63-1")
    if len(prompts) * len(seeds) > LIMITS["images"]:
        raise GenerationError(f"{len(prompts)} prompts x {len(seeds)} seeds: at most {LIMITS['images']} images a run")
    lo, hi = LIMITS["steps"]
    if not isinstance(steps, int) or not lo <= steps <= hi:
        raise GenerationError(f"steps {steps}: choose {lo} to {hi}")
    lo, hi = LIMITS["guidance"]
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not lo <= guidance <= hi:
        raise GenerationError(f"guidance {guidance}: choose {lo} to {hi}")
    lo, hi = LIMITS["side"]
    for label, side in (("width", width), ("height", height)):
        if side is not None and (not isinstance(side, int) or not lo <= side <= hi):
            raise GenerationError(f"{label} {side}: choose {lo} to {hi} pixels")
    seen = set()
    lo, hi = LIMITS["weight"]
    for adapter, weight in adapters:
        if adapter.sha256 in seen:
            raise GenerationError(f"concept {adapter.spec}: named twice (the same adapter)")
        seen.add(adapter.sha256)
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or not lo <= weight <= hi:
            raise GenerationError(f"concept {adapter.spec}: weight {weight}, choose {lo} to {hi}")
    bases = {a.base_model.sha256 for a, _ in adapters}
    if len(bases) > 1:
        names = ", ".join(f"{a.spec} on {a.base_model.name} ({a.base_model.sha256[:8]})" for a, _ in adapters)
        raise GenerationError(f"concepts trained on different base models cannot be combined: {names}")


def _size_multiple(pipe) -> int:
    """The pixel multiple the pipeline's latent grid needs (VAE downsampling x the denoiser's patch)."""
    processor = getattr(pipe, "image_processor", None)
    factor = getattr(getattr(processor, "config", None), "vae_scale_factor", None) or pipe.vae_scale_factor
    return int(factor) * int(getattr(pipe, "patch_size", 1) or 1)


def _activate(pipe, adapters: Sequence[tuple[ResolvedAdapter, float]]) -> list[str]:
    """Loads what is not loaded yet (once per pipeline, by sha256) and activates exactly ``adapters``."""
    state = pipe._conceptlab
    names = []
    for adapter, _ in adapters:
        name = state["loaded"].get(adapter.sha256)
        if name is None:
            name = f"a{adapter.sha256[:16]}"
            pipe.load_lora_weights(str(adapter.adapter_dir), adapter_name=name)
            state["loaded"][adapter.sha256] = name
        names.append(name)
    if state["loaded"]:
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=[float(w) for _, w in adapters])
        else:
            pipe.disable_lora()
    return names


def _lora_components(pipe) -> list[str]:
    return [c for c in pipe._lora_loadable_modules if getattr(pipe, c, None) is not None]


class _Fused:
    """Merges the active adapters into the base weights; on exit restores the exact base weights (an
    unmerge subtracts the delta in floating point, which would move later pictures by a few bits)."""

    def __init__(self, pipe, names: list[str]):
        self.pipe, self.names, self.saved = pipe, names, {}

    def __enter__(self):
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not self.names:
            return self
        for component in _lora_components(self.pipe):
            for mod_name, module in getattr(self.pipe, component).named_modules():
                if isinstance(module, BaseTunerLayer):
                    base = module.get_base_layer()
                    self.saved[(component, mod_name)] = {k: v.detach().clone() for k, v in base.state_dict().items()}
        self.pipe.fuse_lora(components=_lora_components(self.pipe), adapter_names=self.names)
        return self

    def __exit__(self, *exc):
        import torch
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not self.names:
            return False
        self.pipe.unfuse_lora(components=_lora_components(self.pipe))
        with torch.no_grad():
            for component in _lora_components(self.pipe):
                for mod_name, module in getattr(self.pipe, component).named_modules():
                    if isinstance(module, BaseTunerLayer) and (component, mod_name) in self.saved:
                        module.get_base_layer().load_state_dict(self.saved[(component, mod_name)])
        return False


def generate(
    pipe,
    adapters: Sequence[tuple[ResolvedAdapter, float]],
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = DEFAULTS["steps"],
    guidance: float = DEFAULTS["guidance"],
    width: int | None = None,
    height: int | None = None,
    sampler: str = DEFAULTS["sampler"],
    fuse: bool = False,
    negative_prompt: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """One image per (prompt, seed), prompts outer; ``adapters`` pairs an adapter with its weight
    (empty: the base model alone). ``progress(done_steps, total_steps)`` is called after every step."""
    import time

    import torch

    from components.families import family_of

    state = getattr(pipe, "_conceptlab", None)
    if state is None:
        raise GenerationError("generate() takes a pipeline from load_base(), which tracks its adapters")
    base: BaseModelRef = state["base"]
    family = family_of(pipe)
    native = family.native_resolution(base.path)
    width, height = width or native, height or native
    validate(prompts, seeds, steps, guidance, width, height, adapters)
    for adapter, _ in adapters:
        if adapter.base_model.sha256 != base.sha256:
            raise GenerationError(
                f"concept {adapter.spec} was trained on {adapter.base_model.name} "
                f"({adapter.base_model.sha256[:8]}), not this base {base.name} ({base.sha256[:8]})"
            )
    multiple = _size_multiple(pipe)
    if width % multiple or height % multiple:
        raise GenerationError(f"size {width}x{height}: width and height must be multiples of {multiple} for this model")
    total = len(prompts) * len(seeds) * steps
    done = [0]

    def on_step(_pipe, _step, _t, kwargs):
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
        return kwargs

    started = time.perf_counter()
    with _LOCK:
        pipe.scheduler = state["scheduler"]  # the base's own, then the sampler: no state from a last run
        try:
            family.set_sampler(pipe, sampler)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc
        names = _activate(pipe, adapters)
        switched = time.perf_counter()
        images = []
        with _Fused(pipe, names) if fuse else nullcontext():
            fused = time.perf_counter()
            for prompt in prompts:
                for seed in seeds:
                    generator = torch.Generator(device=pipe.device.type).manual_seed(int(seed))
                    with torch.no_grad():
                        out = pipe(
                            prompt,
                            num_inference_steps=steps,
                            **family.guidance_kwargs(pipe, guidance, negative_prompt, 1),
                            width=width,
                            height=height,
                            generator=generator,
                            callback_on_step_end=on_step,
                        )
                    images.append(GeneratedImage(prompt, int(seed), out.images[0]))
            drawn = time.perf_counter()
    settings = _settings(
        pipe, family, adapters, prompts, seeds, steps, guidance, width, height, sampler, fuse, negative_prompt
    )
    timings = {"activate_s": switched - started, "fuse_s": fused - switched, "draw_s": drawn - fused}
    return GenerationResult(images, settings, time.perf_counter() - started, timings)


def _settings(pipe, family, adapters, prompts, seeds, steps, guidance, width, height, sampler, fuse, negative):
    import diffusers
    import peft
    import torch
    import transformers

    base: BaseModelRef = pipe._conceptlab["base"]
    return {
        "format": SETTINGS_FORMAT,
        "prompts": list(prompts),
        "seeds": [int(s) for s in seeds],
        "negative_prompt": negative,
        "steps": steps,
        "guidance": float(guidance),
        "width": width,
        "height": height,
        "sampler": sampler,
        "fuse": fuse,
        "base_model": {"name": base.name, "sha256": base.sha256, "revision": base.revision},
        "family": family.name,
        "adapters": [
            {
                "spec": a.spec,
                "pinned": a.pinned_spec,
                "name": a.name,
                "version": a.version,
                "alias": a.alias,
                "sha256": a.sha256,
                "weight": float(w),
                "source": a.source,
            }
            for a, w in adapters
        ],
        "device": pipe.device.type,
        "dtype": pipe._conceptlab["dtype"],
        "libraries": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
        },
    }


def image_filename(index: int, prompt: str, seed: int) -> str:
    from components.io import slugify

    return f"{index:03d}-{slugify(prompt)[:48]}-seed{seed}.png"


def write_result(result: GenerationResult, out_dir: Path) -> list[Path]:
    """PNGs plus settings.json (with each file's sha256), which ``replay`` turns back into the same bytes."""
    import io

    from components.io import sha256_bytes, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths, files = [], []
    for i, item in enumerate(result.images):
        buf = io.BytesIO()
        item.image.save(buf, format="PNG")
        path = out_dir / image_filename(i, item.prompt, item.seed)
        path.write_bytes(buf.getvalue())
        paths.append(path)
        files.append(
            {"file": path.name, "prompt": item.prompt, "seed": item.seed, "sha256": sha256_bytes(buf.getvalue())}
        )
    write_json(out_dir / "settings.json", {**result.settings, "images": files})
    return paths


def replay(
    settings: dict, tracking_uri: str | None = None, progress=None, base_model: str | None = None
) -> GenerationResult:
    """The same pictures again from a settings.json: each adapter by its pinned version or folder, checked
    against the recorded sha256 (an alias may have moved since)."""
    if settings.get("format") != SETTINGS_FORMAT:
        raise GenerationError(f"settings: format {settings.get('format')!r}, expected {SETTINGS_FORMAT}")
    adapters = []
    for entry in settings["adapters"]:
        cached = cache_root() / "adapters" / entry["sha256"]
        adapter = resolve_adapter(entry["pinned"], tracking_uri, base_model=base_model)
        if adapter.sha256 != entry["sha256"]:
            raise GenerationError(
                f"settings: {entry['pinned']} is now sha256 {adapter.sha256[:12]}, the picture used "
                f"{entry['sha256'][:12]}{' (cached at ' + str(cached) + ')' if cached.exists() else ''}"
            )
        adapters.append((adapter, entry["weight"]))
    if adapters:
        base = adapters[0][0].base_model
    else:
        from components.adapters import _base_model

        recorded = settings["base_model"]
        base = _base_model(recorded, base_model, None, "settings")
    if base.sha256 != settings["base_model"]["sha256"]:
        raise GenerationError(f"settings: base model {base.name} here is not the recorded content")
    pipe = load_base(base, device=settings.get("device"), dtype=settings.get("dtype", "float32"))
    return generate(
        pipe,
        adapters,
        settings["prompts"],
        settings["seeds"],
        steps=settings["steps"],
        guidance=settings["guidance"],
        width=settings["width"],
        height=settings["height"],
        sampler=settings["sampler"],
        fuse=settings["fuse"],
        negative_prompt=settings.get("negative_prompt", ""),
        progress=progress,
    )
