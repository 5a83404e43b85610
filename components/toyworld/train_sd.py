"""The toy world's Stable Diffusion: a CLIP text encoder and a cross-attention U-Net trained together
from scratch on the world's latents (epsilon prediction, SD1.x's noise schedule), with caption
dropout so classifier-free guidance works, min-SNR loss weighting and an EMA of the weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.tiny_models import sd_scheduler
from components.toyworld.data import pick_captions
from components.toyworld.schedule import ema_tracker, train_loop
from components.toyworld.tokenizer import MAX_LENGTH

CROSS_ATTENTION_DIM = 64
CAPTION_DROPOUT = 0.1  # share of empty captions: the unconditional branch of classifier-free guidance
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023: converges faster than the plain epsilon loss
EMA_DECAY = 0.999


def new_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=4 * CROSS_ATTENTION_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )


def new_unet(sample_size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(48, 96),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=24,
    )


def train_sd(
    latent_mean,
    latent_std,
    captions: tuple[torch.Tensor, torch.Tensor],
    tokenizer,
    steps,
    batch_size,
    lr,
    seed,
    log=print,
    text_encoder_factory=new_text_encoder,
    max_length: int = MAX_LENGTH,
):
    """Returns (text_encoder, unet) with EMA weights; latents are the VAE's, already scaled; captions are
    the token ids of the full and the partial captions (WorldData.training_captions).
    ``text_encoder_factory(tokenizer)`` makes the untrained text encoder: CLIP's here, BERT's for the
    Taiyi layout (build_taiyi.py); its first output must be the hidden states the U-Net attends to."""
    torch.manual_seed(seed)
    text_encoder = text_encoder_factory(tokenizer).train()
    unet = new_unet(latent_mean.shape[-1]).train()
    scheduler = sd_scheduler("epsilon")
    full, partial = captions
    empty = tokenizer([""], padding="max_length", max_length=max_length, return_tensors="pt").input_ids
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    gen = torch.Generator().manual_seed(seed)
    modules = torch.nn.ModuleList([text_encoder, unet])
    ema, update_ema = ema_tracker(modules, EMA_DECAY)

    def step_loss(step: int) -> torch.Tensor:
        index = torch.randint(len(latent_mean), (batch_size,), generator=gen)
        latents = latent_mean[index] + latent_std[index] * torch.randn(latent_mean[index].shape, generator=gen)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        noisy = scheduler.add_noise(latents, noise, t)
        tokens = pick_captions(full, partial, index, gen)
        drop = torch.rand(batch_size, generator=gen) < CAPTION_DROPOUT
        tokens[drop] = empty
        hidden = text_encoder(tokens)[0]
        pred = unet(noisy, t, hidden).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * weights[t]).mean()

    train_loop(modules.parameters(), step_loss, steps, lr, "sd", after_step=update_ema, log=log)
    text_encoder, unet = ema[0].eval(), ema[1].eval()
    return text_encoder, unet
