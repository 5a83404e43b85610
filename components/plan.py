"""`conceptlab plan`: will a LoRA training run fit on this GPU, and how long is a step? For every
combination of the memory options (optimizer, base_quantization, gradient_checkpointing, offload_frozen,
mixed_precision), the estimated peak GPU memory and seconds per step, from one meta-device trace of the
base model (components/plan_trace.py): nothing is allocated, nothing is downloaded.

Peak memory (what torch.cuda.max_memory_allocated reports) is the larger of two phases:
- caching, before the loop and before the denoiser is loaded (components/train.py `_build_cache`): the
  VAE and the frozen text encoders encode images and prompts once; with offload_frozen cpu/free each is
  on the GPU alone while it runs, with none all of them are there together (and stay for the loop);
  text encoders that train (LoRA) are not run then and join the GPU with the denoiser;
- the loop: the frozen denoiser (16-bit, or 4/8-bit Linear weights with base_quantization), the LoRA
  weights, their gradients and the optimizer state (fp32), the activations backward needs (traced),
  backward's working set (three times the largest of them), and a quantized matmul's dequantized weight.
The GPU itself needs CUDA_CONTEXT_GIB more, outside torch's allocator: "fits" counts it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from components.plan_trace import Trace

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5  # the CUDA context and kernels (CUDA 12 lazy loading), seen by nvidia-smi, not by torch

# Bytes per frozen weight. bitsandbytes NF4: 4 bits + one fp32 absmax per 64-weight block (no double
# quantization: diffusers' BitsAndBytesConfig default); LLM.int8: 1 byte + one fp32 scale per row (~0).
WEIGHT_BYTES = {"no": 4.0, "fp16": 2.0, "bf16": 2.0}
QUANT_BYTES = {"nf4": 0.5 + 4 / 64, "int8": 1.0}
# Per trainable LoRA parameter: fp32 weight + fp32 gradient + optimizer state (AdamW: two fp32 moments;
# bitsandbytes AdamW8bit: two 8-bit moments, block scales aside).
LORA_BYTES = {"adamw": 4 + 4 + 8, "adamw_8bit": 4 + 4 + 2}

# Assumed sustained throughput: dense peak TFLOPS (16-bit tensor cores, fp32 accumulate; fp32 without TF32,
# which training leaves off) x MFU, the fraction a diffusion LoRA step reaches. Assumptions, not
# measurements: benchmarks/gpu.py prints the measured s/step beside them.
GPU_PEAK_TFLOPS = {  # kind -> (16-bit, fp32)
    "h100": (989.0, 67.0),
    "h200": (989.0, 67.0),
    "a100": (312.0, 19.5),
    "l40s": (362.0, 91.6),
    "rtx4090": (165.0, 82.6),
    "rtx3090": (71.0, 35.6),
}
MFU = 0.35
# A quantized base dequantizes each Linear weight in every forward and backward matmul (assumed slowdown).
QUANT_SLOWDOWN = {"none": 1.0, "nf4": 1.3, "int8": 1.5}

OPTIMIZERS = ("adamw", "adamw_8bit")
QUANTIZATIONS = ("none", "nf4", "int8")
OFFLOADS = ("none", "cpu", "free")


@dataclass(frozen=True)
class Setting:
    optimizer: str
    base_quantization: str
    gradient_checkpointing: bool
    offload_frozen: str
    mixed_precision: str


@dataclass(frozen=True)
class Estimate:
    setting: Setting
    loop_gib: float
    caching_gib: float
    peak_gib: float  # max of the two: compare with torch.cuda.max_memory_allocated
    s_per_step: float
    fits: bool | None  # peak + CUDA context <= the GPU's memory; None without a GPU size
    loop_bytes: dict[str, int]  # the loop's parts: denoiser, resident (frozen parts kept), lora, activations

    def row(self) -> dict:
        return {**asdict(self.setting), **{k: v for k, v in asdict(self).items() if k != "setting"}}


def setting_of(train) -> Setting:
    """The setting a TrainParams asks for."""
    return Setting(
        optimizer=train.optimizer,
        base_quantization=train.base_quantization,
        gradient_checkpointing=bool(train.gradient_checkpointing),
        offload_frozen=train.offload_frozen,
        mixed_precision=train.mixed_precision,
    )


def all_settings(precisions: tuple[str, ...] = ("bf16", "no")) -> list[Setting]:
    return [Setting(*c) for c in itertools.product(OPTIMIZERS, QUANTIZATIONS, (False, True), OFFLOADS, precisions)]


def estimate(trace: Trace, setting: Setting, gpu: str = "h100", gpu_memory_gib: float | None = None) -> Estimate:
    s, d = setting, trace.sizes[trace.denoiser_name]
    wbytes = WEIGHT_BYTES[s.mixed_precision]
    if s.base_quantization == "none":
        denoiser = d.params * wbytes
    else:  # bitsandbytes replaces nn.Linear layers; convolutions, norms and embeddings keep their dtype
        denoiser = d.linear_params * QUANT_BYTES[s.base_quantization] + (d.params - d.linear_params) * wbytes
        denoiser += d.largest_linear * wbytes  # the dequantized weight of the matmul in flight
    others = {n: c for n, c in trace.sizes.items() if n != trace.denoiser_name}
    # Frozen parts stay on the GPU during the loop unless offloaded; a text encoder with LoRA always stays.
    resident = sum(c.params * wbytes for c in others.values() if s.offload_frozen == "none" or c.lora_params)
    lora = sum(c.lora_params for c in trace.sizes.values()) * LORA_BYTES[s.optimizer]
    precision = 0 if s.mixed_precision in ("fp16", "bf16") else 1
    # Backward's working set beside what was saved: the incoming and outgoing gradient of the op in flight
    # and one temporary, each at most the largest saved tensor.
    activations = trace.activations[s.gradient_checkpointing][precision] + 3 * trace.largest_activation[precision]
    loop = denoiser + resident + lora + activations
    # Caching runs before the denoiser is loaded: the VAE and the frozen text encoders (those without LoRA).
    encoding = trace.caching_activations[precision]  # the VAE's; text encoders' are small beside their weights
    vae = others["vae"].params * wbytes + encoding
    encoders = [c.params * wbytes for n, c in others.items() if n != "vae" and not c.lora_params]
    # none: all on the GPU together; cpu/free: each alone while it runs
    caching = vae + sum(encoders) if s.offload_frozen == "none" else max([vae, *encoders])
    peak = max(loop, caching) / GIB
    flops = trace.forward_flops * (2 if s.gradient_checkpointing else 1) + trace.backward_flops
    tflops = GPU_PEAK_TFLOPS[gpu][precision] * MFU * 1e12
    seconds = flops / tflops * QUANT_SLOWDOWN[s.base_quantization]
    fits = None if gpu_memory_gib is None else peak + CUDA_CONTEXT_GIB <= gpu_memory_gib
    parts = {"denoiser": denoiser, "resident": resident, "lora": lora, "activations": activations}
    return Estimate(s, loop / GIB, caching / GIB, peak, seconds, fits, {k: int(v) for k, v in parts.items()})


def plan(
    trace: Trace,
    settings: list[Setting],
    gpu: str = "h100",
    gpu_memory_gib: float | None = None,
) -> list[Estimate]:
    """Every setting's estimate, smallest peak memory first."""
    if gpu not in GPU_PEAK_TFLOPS:
        raise ValueError(f"gpu {gpu!r}: choose one of {', '.join(GPU_PEAK_TFLOPS)}")
    rows = [estimate(trace, s, gpu, gpu_memory_gib) for s in settings]
    return sorted(rows, key=lambda e: (e.peak_gib, e.s_per_step))


def plan_report(
    model,
    resolution: int,
    batch_size: int,
    rank: int,
    prior_preservation: bool = False,
    train_text_encoder: bool = False,
    text_encoder_rank: int = 4,
    target_modules: list[str] | None = None,
    current: Setting | None = None,
    gpu: str = "h100",
    gpu_memory_gib: float | None = None,
) -> dict:
    """Traces ``model`` (a plan_shapes.MetaModel) once and estimates every setting: the JSON `plan` writes."""
    from components.plan_trace import trace_step

    rows = batch_size * (2 if prior_preservation else 1)  # prior preservation adds a class image per image
    trace = trace_step(model, resolution, rows, rank, target_modules, train_text_encoder, text_encoder_rank)
    half = current.mixed_precision if current and current.mixed_precision == "fp16" else "bf16"
    estimates = plan(trace, all_settings((half, "no")), gpu, gpu_memory_gib)
    return {
        "model": model.name,
        "family": model.family.name,
        "resolution": resolution,
        "batch_size": batch_size,
        "denoiser_rows": rows,
        "rank": rank,
        "params_millions": {n: round(c.params / 1e6, 1) for n, c in trace.sizes.items()},
        "lora_params_millions": round(sum(c.lora_params for c in trace.sizes.values()) / 1e6, 2),
        "gflops_per_step": round((trace.forward_flops + trace.backward_flops) / 1e9),
        "gpu": gpu,
        "gpu_memory_gib": gpu_memory_gib,
        "assumptions": {
            "cuda_context_gib": CUDA_CONTEXT_GIB,
            "peak_tflops_16bit_fp32": GPU_PEAK_TFLOPS[gpu],
            "mfu": MFU,
            "quantized_slowdown": QUANT_SLOWDOWN,
            "bytes_per_weight": {**WEIGHT_BYTES, **QUANT_BYTES},
            "bytes_per_lora_param": LORA_BYTES,
        },
        "current": asdict(current) if current else None,
        "rows": [e.row() for e in estimates],
    }
