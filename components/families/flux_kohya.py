"""A Flux transformer adapter in kohya sd-scripts' format (what ComfyUI, Forge and kohya load).

kohya names LoRA modules after BFL's original Flux code, where q, k and v are one fused ``qkv`` linear
(and, in single-stream blocks, ``linear1`` fuses q, k, v and the MLP input). Separate q/k/v adapters of
rank r become one fused adapter of rank n·r with a block-diagonal up matrix (absent members are zero
blocks) and alpha n·alpha, so alpha/rank and every weight delta stay the same: the "split qkv" layout that
sd-scripts writes and diffusers' kohya loader detects as sparse.
"""

from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger(__name__)

_PREFIX = "lora_unet_"
# diffusers module (within a double block) -> kohya module; groups are fused in this order.
_DOUBLE_FUSED = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_DOUBLE = {
    "attn.to_out.0": "img_attn_proj",
    "attn.to_add_out": "txt_attn_proj",
    "ff.net.0.proj": "img_mlp_0",
    "ff.net.2": "img_mlp_2",
    "ff_context.net.0.proj": "txt_mlp_0",
    "ff_context.net.2": "txt_mlp_2",
    "norm1.linear": "img_mod_lin",
    "norm1_context.linear": "txt_mod_lin",
}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
_SINGLE = {"proj_out": "linear2", "norm.linear": "modulation_lin"}
_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "proj_out": "final_layer_linear",
    "time_text_embed.timestep_embedder.linear_1": "time_in_in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in_out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in_in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in_out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in_in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in_out_layer",
}
_MLP_RATIO = 4  # FLUX.1 single blocks: proj_mlp has 4x the attention width


def _modules(peft_state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """transformer module path -> (A [r, in], B [out, r])."""
    out: dict[str, list] = {}
    for key, value in peft_state.items():
        m = re.fullmatch(r"transformer\.(.+)\.lora_([AB])\.weight", key)
        if m is None:
            continue
        out.setdefault(m.group(1), [None, None])["AB".index(m.group(2))] = value
    return {k: (a, b) for k, (a, b) in out.items()}


def _fused(members: list[tuple[torch.Tensor, torch.Tensor] | None], out_dims: list[int]):
    """One adapter for a fused linear: down = [A_1; ...; A_n], up = blockdiag(B_1, ..., B_n)."""
    present = [m for m in members if m is not None]
    rank, in_dim = present[0][0].shape
    downs = [m[0] if m is not None else torch.zeros(rank, in_dim) for m in members]
    ups = [m[1] if m is not None else torch.zeros(d, rank) for m, d in zip(members, out_dims, strict=True)]
    return torch.cat(downs), torch.block_diag(*ups)


def flux_kohya_state(peft_state: dict[str, torch.Tensor], alphas: dict[str, float]) -> dict[str, torch.Tensor] | None:
    """kohya-format tensors for the transformer's adapter; None when a module has no kohya name (the
    diffusers-format adapter is still written) or when text encoders carry adapters."""
    if any(not k.startswith("transformer.") for k in peft_state):
        log.warning("kohya export skipped: Flux text-encoder adapters are not written in kohya format here")
        return None
    alpha = float(alphas["transformer"])
    modules = _modules(peft_state)
    out: dict[str, torch.Tensor] = {}

    def put(name: str, down: torch.Tensor, up: torch.Tensor, n: int = 1) -> None:
        out[f"{_PREFIX}{name}.lora_down.weight"] = down.contiguous()
        out[f"{_PREFIX}{name}.lora_up.weight"] = up.contiguous()
        out[f"{_PREFIX}{name}.alpha"] = torch.tensor(alpha * n, dtype=torch.float32)

    used: set[str] = set()
    for path, (a, b) in modules.items():
        m = re.fullmatch(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)", path)
        if m is None:
            if path in _TOP:
                put(_TOP[path], a, b)
                used.add(path)
            continue
        kind, i, sub = m.groups()
        block = f"double_blocks_{i}" if kind == "transformer_blocks" else f"single_blocks_{i}"
        plain = _DOUBLE if kind == "transformer_blocks" else _SINGLE
        if sub in plain:
            put(f"{block}_{plain[sub]}", a, b)
            used.add(path)
    for kind, block_kind, groups in (
        ("transformer_blocks", "double_blocks", _DOUBLE_FUSED),
        ("single_transformer_blocks", "single_blocks", _SINGLE_FUSED),
    ):
        indices = sorted({int(p.split(".")[1]) for p in modules if p.startswith(kind + ".")})
        for i in indices:
            for fused_name, subs in groups.items():
                paths = [f"{kind}.{i}.{s}" for s in subs]
                members = [modules.get(p) for p in paths]
                if all(m is None for m in members):
                    continue
                width = next(
                    m[1].shape[0] // (_MLP_RATIO if s == "proj_mlp" else 1)
                    for s, m in zip(subs, members, strict=True)
                    if m is not None
                )
                dims = [_MLP_RATIO * width if s == "proj_mlp" else width for s in subs]
                down, up = _fused(members, dims)
                put(f"{block_kind}_{i}_{fused_name}", down, up, n=len(subs))
                used.update(p for p, m in zip(paths, members, strict=True) if m is not None)
    unnamed = sorted(set(modules) - used)
    if unnamed:
        log.warning("kohya export skipped: no kohya name for Flux modules %s", ", ".join(unnamed[:5]))
        return None
    return out
