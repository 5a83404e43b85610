"""What one training step of a LoRA on a base model holds and computes, measured without memory: the
model's frozen parts on the meta device get the family's LoRA (the same add_lora as training), and one
forward and backward pass of the denoiser runs on meta tensors. A saved-tensor hook records every
activation autograd keeps for backward (bytes, by storage, parameters excluded), and torch's
FlopCounterMode the matmul/conv/attention FLOPs of both passes.

Gradient checkpointing: diffusers calls one function for every block it checkpoints; the trace passes
its own (which runs the block as is and notes which tensors each block saved and took as inputs), so one
trace gives both figures: without checkpointing, everything saved; with it, what is saved outside the
blocks + every block's inputs + the most one block saves when it is recomputed in backward (nested
blocks, as in SDXL's attention, recursively)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from components.config import TrainParams
from components.families import Parts, TrainImage
from components.lora import add_lora
from components.plan_shapes import MetaModel

PROMPT = "a photo of sks dog"


@dataclass
class ComponentSize:
    params: int  # frozen base parameters
    linear_params: int  # of those, nn.Linear weights: what a bitsandbytes-quantized base stores in 4 or 8 bits
    largest_linear: int  # one Linear weight's elements: the dequantized copy a quantized matmul makes
    lora_params: int = 0  # trainable LoRA parameters added to this component


@dataclass
class Trace:
    sizes: dict[str, ComponentSize]  # denoiser name, text encoder names, "vae"
    denoiser_name: str
    rows: int  # the denoiser's batch
    # checkpointing -> bytes held for backward (with 16-bit mixed precision, in fp32); the largest saved
    # tensor likewise (its gradient is as large, at the start of backward)
    activations: dict[bool, tuple[int, int]]
    largest_activation: tuple[int, int]
    forward_flops: int
    backward_flops: int
    caching_activations: tuple[int, int]  # peak of the VAE encoding two images (16-bit, fp32 bytes)


@dataclass
class _Unit:
    """A checkpointed block (or the whole model, at the root): what it saved itself, its inputs, its blocks."""

    saved: dict[int, tuple[int, bool]] = field(default_factory=dict)  # storage -> (bytes, 16-bit)
    inputs: dict[int, tuple[int, bool]] = field(default_factory=dict)
    children: list[_Unit] = field(default_factory=list)

    def held(self) -> dict[int, tuple[int, bool]]:
        """Held while this unit's backward runs (recomputed when it is a checkpointed block)."""
        return self.saved | {k: v for c in self.children for k, v in c.inputs.items()}

    def peak(self, precision_factor: int) -> int:
        own = _bytes(self.held(), precision_factor)
        return own + max((c.peak(precision_factor) for c in self.children), default=0)


def _bytes(entries: dict[int, tuple[int, bool]], factor: int) -> int:
    return sum(n * factor if low else n for n, low in entries.values())


def _key(t: torch.Tensor) -> int:
    return StorageWeakRef(t.untyped_storage()).cdata


def _entry(t: torch.Tensor) -> tuple[int, bool]:
    return t.untyped_storage().nbytes(), t.element_size() == 2


class _Recorder:
    def __init__(self, model: torch.nn.Module):
        self.params = {_key(p) for p in model.parameters()}
        self.root = _Unit()
        self.stack = [self.root]
        self.seen: set[int] = set()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        k = _key(t)
        if k not in self.params and k not in self.seen:
            self.seen.add(k)
            self.stack[-1].saved[k] = _entry(t)
        return t

    def block(self, module, *args):
        """Stands in for torch.utils.checkpoint in diffusers' checkpointed blocks: runs the block, notes it."""
        unit = _Unit(inputs={_key(a): _entry(a) for a in args if isinstance(a, torch.Tensor)})
        self.stack[-1].children.append(unit)
        self.stack.append(unit)
        try:
            return module(*args)
        finally:
            self.stack.pop()


class _MemoryEfficientAttention(TorchFunctionMode):
    """On meta tensors SDPA falls back to its math form, which keeps the attention matrix; GPUs run a
    fused kernel that keeps q, k, v, the output and the log-sum-exp. Trace that kernel instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        named = (
            dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"), args, strict=False))
            | kwargs
        )
        q, k, v, mask = named["query"], named["key"], named["value"], named.get("attn_mask")
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        if mask is not None:
            mask = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, mask, True, 0.0, named.get("is_causal", False), scale=named.get("scale")
        )[0]


def _size(module: torch.nn.Module) -> ComponentSize:
    linears = [m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return ComponentSize(sum(p.numel() for p in module.parameters()), sum(linears), max(linears, default=0))


def trace_step(
    model: MetaModel,
    resolution: int,
    rows: int,
    rank: int,
    target_modules: list[str] | None = None,
    train_text_encoder: bool = False,
    text_encoder_rank: int = 4,
) -> Trace:
    """One training step of ``rows`` images at ``resolution`` on the meta model (16-bit weights). The model
    gets LoRA and checkpointing hooks here: build a fresh one for another trace. LoRA parameters are
    counted as peft creates them: rank x (in + out) per target module the family names."""
    family, name = model.family, model.family.denoiser_name
    modules = {name: model.denoiser, **model.text_encoders, "vae": model.vae}
    sizes = {n: _size(m) for n, m in modules.items()}
    parts = Parts(name, model.denoiser, model.text_encoders, model.tokenizers, model.vae, None)
    params = TrainParams(
        rank=rank,
        alpha=float(rank),
        target_modules=target_modules,
        train_text_encoder=train_text_encoder,
        text_encoder_rank=text_encoder_rank,
    )
    add_lora(family, parts, params)
    for n, m in modules.items():
        sizes[n].lora_params = sum(p.numel() for p in m.parameters() if p.requires_grad)
        m.to(torch.bfloat16)
    recorder = _Recorder(torch.nn.ModuleList(modules.values()))
    model.denoiser.enable_gradient_checkpointing(gradient_checkpointing_func=recorder.block)

    side = resolution // model.vae_factor
    noisy = torch.zeros(rows, model.latent_channels, side, side, dtype=torch.bfloat16, device="meta")
    timesteps = torch.full((rows,), 500.0 if name == "transformer" else 500, device="meta")
    image = {k: v.unsqueeze(0).expand(rows, *v.shape).to("meta") for k, v in _image_conditioning(model, resolution)}
    tokens = {k: v.to("meta") for k, v in family.tokenize(parts, [PROMPT] * rows).items()}
    caching = _vae_encode_peak(model, resolution)
    flops = FlopCounterMode(display=False)
    with _MemoryEfficientAttention(), flops, torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda t: t):
        with torch.set_grad_enabled(train_text_encoder):
            prompt = family.encode_prompts(parts, tokens)
        prompt = {k: v.to(torch.bfloat16) for k, v in prompt.items()}
        out = family.predict(parts, noisy, timesteps, prompt, image)
        forward = flops.get_total_flops()
        out.float().square().mean().backward()
    total = flops.get_total_flops()

    def held(checkpointing: bool, factor: int) -> int:
        if checkpointing:
            return recorder.root.peak(factor)
        return _bytes({k: v for u in _walk(recorder.root) for k, v in u.saved.items()}, factor)

    everything = {k: v for u in _walk(recorder.root) for k, v in u.saved.items()}
    biggest = max(everything.values(), default=(0, True))
    return Trace(
        sizes=sizes,
        denoiser_name=name,
        rows=rows,
        activations={c: (held(c, 1), held(c, 2)) for c in (False, True)},
        largest_activation=(biggest[0], biggest[0] * 2 if biggest[1] else biggest[0]),
        forward_flops=forward,
        backward_flops=total - forward,
        caching_activations=(caching, caching * 2),
    )


def _walk(unit: _Unit):
    yield unit
    for c in unit.children:
        yield from _walk(c)


def _image_conditioning(model: MetaModel, resolution: int):
    image = TrainImage(Path("square.png"), (resolution, resolution))  # a photo already at the training size
    return model.family.image_conditioning(image, resolution, False).items()


class _LiveBytes(TorchDispatchMode):
    """The most bytes that tensors made inside it held at once (each op's outputs, until they are freed)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.live[_key(t)] = (StorageWeakRef(t.untyped_storage()), t.untyped_storage().nbytes())
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


@torch.no_grad()
def _vae_encode_peak(model: MetaModel, resolution: int) -> int:
    """Caching encodes each image with its mirror image (two at a time): the VAE encoder's peak, 16-bit."""
    model.vae.to(torch.bfloat16)
    with _MemoryEfficientAttention(), _LiveBytes() as live:
        pixels = torch.zeros(2, 3, resolution, resolution, dtype=torch.bfloat16, device="meta")
        dist = model.vae.encode(pixels).latent_dist
        del dist
    return live.peak
