"""The denoising objective every diffusion model trained here shares (digits DDPM, shapes LDM).

A clean sample x0 (pixels in [-1, 1], or a scaled latent), a timestep drawn uniformly, the noised
x_t from the scheduler's own `add_noise`, and an MSE between the UNet's output and its target (the
noise, for the epsilon prediction every model here uses). Conditions are dropped (replaced by the text encoder's `null`) with probability `p_uncond`,
so that one model serves classifier-free guidance: the sampler calls it with and without the prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

P_UNCOND = 0.1  # the fraction GLIDE and Imagen drop; enough for guidance scales up to ~5


def denoiser_loss(unet, scheduler, x0: torch.Tensor, cond: torch.Tensor, null: torch.Tensor,
                  gen: torch.Generator, p_uncond: float = P_UNCOND) -> torch.Tensor:
    """The denoising MSE of a diffusers UNet2DConditionModel on one batch (epsilon by default).

    cond: (n, L, D) encoder states of the captions; null: the same shape, the unconditional states.
    Every random draw comes from `gen`, so a training run is repeatable on one machine."""
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device=x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen, device=x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    drop = torch.rand(n, generator=gen, device=x0.device) < p_uncond
    states = torch.where(drop.view(n, 1, 1), null, cond)
    out = unet(x_t, t, encoder_hidden_states=states).sample
    return F.mse_loss(out, target(scheduler, x0, noise, t))


def target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output, by the schedule's prediction_type (epsilon for the models here,
    as for LDM and GLIDE; `sample` learns x0 directly; v_prediction as in Stable Diffusion 2)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"prediction_type {kind!r} is not one of epsilon, sample, v_prediction")
