"""The denoising objective every diffusion model trained here shares (digits DDPM, shapes LDM).

A clean sample x0 (pixels in [-1, 1], or a scaled latent), a timestep drawn uniformly, the noised
x_t from the scheduler's own `add_noise`, and an MSE between the UNet's noise prediction and the
noise. Conditions are dropped (replaced by the text encoder's `null`) with probability `p_uncond`,
so that one model serves classifier-free guidance: the sampler calls it with and without the prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

P_UNCOND = 0.1  # the fraction GLIDE and Imagen drop; enough for guidance scales up to ~5


def denoiser_loss(unet, scheduler, x0: torch.Tensor, cond: torch.Tensor, null: torch.Tensor,
                  gen: torch.Generator, p_uncond: float = P_UNCOND) -> torch.Tensor:
    """Epsilon-prediction MSE of a diffusers UNet2DConditionModel on one batch.

    cond: (n, L, D) encoder states of the captions; null: the same shape, the unconditional states.
    Every random draw comes from `gen`, so a training run is repeatable on one machine."""
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device=x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen, device=x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    drop = torch.rand(n, generator=gen, device=x0.device) < p_uncond
    states = torch.where(drop.view(n, 1, 1), null, cond)
    eps = unet(x_t, t, encoder_hidden_states=states).sample
    return F.mse_loss(eps, noise)
