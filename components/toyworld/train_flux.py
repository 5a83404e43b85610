"""The toy world's Flux: a FluxTransformer2DModel (double- and single-stream blocks, 2x2 packed latent
patches) with a CLIP text encoder (pooled vector) and a T5 encoder (token states), trained together
from scratch by rectified flow on the toy VAE's latents, with caption dropout so classifier-free
guidance works and an EMA of the weights.

The loss is the project's own flux family's (``Flux.noisy_input`` / ``Flux.predict``): the same noise
levels (logit-normal, the scheduler's shift), noisy input, velocity target and packing a LoRA
fine-tune through ``conceptlab train`` uses, so fine-tuning continues the objective the base learned.
No guidance embedding (FLUX.1-schnell's layout): FLUX.1-dev's is distilled from a teacher's
classifier-free guidance, which a model trained from scratch does not have; it samples with true CFG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.families.base import LossOptions, Parts
from components.toyworld.schedule import ema_tracker, train_loop
from components.toyworld.train_sd import CAPTION_DROPOUT, EMA_DECAY, new_text_encoder

T5_DIM = 64  # joint_attention_dim (T5-XXL: 4096)
CLIP_DIM = 64  # pooled_projection_dim = the CLIP text encoder's hidden size (CLIP-L: 768)
LATENT_CHANNELS = 4  # the toy VAE's; packed 2x2 -> 16 transformer input channels (FLUX.1: 16 -> 64)

# FlowMatchEulerDiscreteScheduler for 16-token images. The shift moves noise levels towards noise for
# large images, whose many correlated pixels survive low noise (SD3 paper 5.3.2: shift sqrt(m/n) against a
# 256^2 reference; FLUX.1-dev: exp(mu), mu from the token count, 1.58 extrapolated down to 16 tokens).
# A 32 px image is smaller than any reference, so no shift: 1.0, static (as FLUX.1-schnell ships).
SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def new_t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    # T5 v1.1 layout (gated GELU, untied head, relative position buckets) as T5-XXL, shrunk.
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=T5_DIM,
            d_kv=16,
            d_ff=2 * T5_DIM,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            is_encoder_decoder=False,
            use_cache=False,
        )
    )


def new_transformer(double_layers: int = 2, single_layers: int = 4):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=double_layers,
        num_single_layers=single_layers,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=T5_DIM,
        pooled_projection_dim=CLIP_DIM,
        guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),  # (text/index, row, col); sums to the head size as FLUX.1's (16, 56, 56)
    )


def new_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER)


def train_flux(
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    clip_captions: tuple[torch.Tensor, torch.Tensor],
    t5_captions: tuple[torch.Tensor, torch.Tensor],
    tokenizers: tuple,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    double_layers: int = 2,
    single_layers: int = 4,
    log=print,
):
    """Returns (clip_text_encoder, t5_encoder, transformer) with EMA weights. Latents are normalised as
    the transformer sees them ((z - shift) x scale); captions are the full and partial token ids per
    tokenizer (WorldData.training_captions), row i of each the same image."""
    from components.families.flux import Flux

    torch.manual_seed(seed)
    clip_tok, t5_tok = tokenizers
    clip, t5 = new_text_encoder(clip_tok).train(), new_t5(t5_tok).train()
    transformer = new_transformer(double_layers, single_layers).train()
    family, options = Flux(), LossOptions()  # params.yaml's train defaults: logit-normal, the scheduler's shift
    parts = Parts("transformer", transformer, {"text_encoder": clip, "text_encoder_2": t5}, {}, None, new_scheduler())
    empty = {
        "text_encoder": clip_tok([""], padding="max_length", max_length=clip_captions[0].shape[1], return_tensors="pt"),
        "text_encoder_2": t5_tok([""], padding="max_length", max_length=t5_captions[0].shape[1], return_tensors="pt"),
    }
    gen = torch.Generator().manual_seed(seed)
    modules = torch.nn.ModuleList([clip, t5, transformer])
    ema, update_ema = ema_tracker(modules, EMA_DECAY)

    def step_loss(step: int) -> torch.Tensor:
        index = torch.randint(len(latent_mean), (batch_size,), generator=gen)
        latents = latent_mean[index] + latent_std[index] * torch.randn(latent_mean[index].shape, generator=gen)
        noise = torch.randn(latents.shape, generator=gen)
        noised = family.noisy_input(parts.scheduler, latents, noise, gen, options)
        # One choice per image for both tokenizers: half partial captions, CAPTION_DROPOUT empty ones.
        use_partial = torch.rand(batch_size, generator=gen) < 0.5
        drop = torch.rand(batch_size, generator=gen) < CAPTION_DROPOUT
        tokens = {}
        for name, (full, partial) in (("text_encoder", clip_captions), ("text_encoder_2", t5_captions)):
            ids = torch.where(use_partial[:, None], partial[index], full[index])
            ids[drop] = empty[name].input_ids
            tokens[name] = ids
        pred = family.predict(parts, noised.noisy, noised.timesteps, family.encode_prompts(parts, tokens), {})
        return F.mse_loss(pred, noised.target)

    train_loop(modules.parameters(), step_loss, steps, lr, "flux", after_step=update_ema, log=log)
    clip, t5, transformer = (m.eval() for m in ema)
    return clip, t5, transformer
