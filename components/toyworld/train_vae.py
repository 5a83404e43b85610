"""The toy world's AutoencoderKL: 32 px images to 8 x 8 x 4 latents (a 4x downsampling; SD's is 8x
at 512 px), trained on reconstruction with a small KL term, as SD's VAE was (without its GAN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.toyworld.data import RESOLUTION, WorldData
from components.toyworld.schedule import train_loop

KL_WEIGHT = 1e-6


def new_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=RESOLUTION,
    )


def train_vae(data: WorldData, steps: int, batch_size: int, lr: float, seed: int, log=print):
    torch.manual_seed(seed)
    vae = new_vae().train()
    gen = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> torch.Tensor:
        x = data.batch(torch.randint(len(data.pixels), (batch_size,), generator=gen))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return F.mse_loss(recon, x) + KL_WEIGHT * posterior.kl().mean()

    train_loop(vae.parameters(), step_loss, steps, lr, "vae", log=log)
    vae.eval()
    # SD scales latents to unit variance before diffusion (0.18215 for SD1.x); measure ours.
    with torch.no_grad():
        sample = vae.encode(data.batch(torch.arange(min(1024, len(data.pixels))))).latent_dist.mode()
    vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    return vae


@torch.no_grad()
def encode_all(vae, data: WorldData, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (sampled afresh each training step, as SD does)."""
    means, stds = [], []
    for start in range(0, len(data.pixels), batch_size):
        dist = vae.encode(data.batch(torch.arange(start, min(start + batch_size, len(data.pixels))))).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_psnr(vae, data: WorldData) -> float:
    x = data.batch(torch.arange(len(data.pixels)))
    recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    mse = F.mse_loss((recon + 1) / 2, (x + 1) / 2).item()
    return float(10 * torch.log10(torch.tensor(1.0 / mse)))
