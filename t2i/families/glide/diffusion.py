"""GLIDE's Gaussian diffusion maths: beta schedules, respacing, and p(x_{t-1} | x_t) with learned-range variance.

Knows nothing of networks: p_mean_variance takes the model's output. Tables are float64 as in the
release and are indexed before the cast to float32, so results match its `_extract_into_tensor`.
"""

import math

import torch

from .sizes import space_timesteps


def betas(schedule: str, steps: int = 1000) -> torch.Tensor:
    """float64 betas of the release's named schedules ("linear" for the upsampler, "squaredcos_cap_v2" for base)."""
    if schedule == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * 0.0001, scale * 0.02, steps, dtype=torch.float64)
    if schedule == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999)
                             for i in range(steps)], dtype=torch.float64)
    raise ValueError(f"unknown noise schedule {schedule!r} (linear, squaredcos_cap_v2)")


class GlideDiffusion:
    """A (respaced) diffusion; index it with respaced steps 0..len-1 and give the model timestep_map[t]."""

    def __init__(self, schedule: str = "squaredcos_cap_v2", steps: int = 1000, respacing: str = ""):
        base = betas(schedule, steps)
        alphas_cumprod = torch.cumprod(1 - base, dim=0)
        kept = space_timesteps(steps, respacing) if respacing else list(range(steps))
        # New betas reproduce the kept alphas_cumprod exactly.
        kept_ac = alphas_cumprod[kept]
        b = 1 - kept_ac / torch.cat([torch.ones(1, dtype=torch.float64), kept_ac[:-1]])
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        self.betas = b
        ac = torch.cumprod(1 - b, dim=0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        self.alphas_cumprod = ac
        self.alphas_cumprod_prev = ac_prev
        self.sqrt_recip_alphas_cumprod = torch.sqrt(1 / ac)
        self.sqrt_recipm1_alphas_cumprod = torch.sqrt(1 / ac - 1)
        posterior_variance = b * (1 - ac_prev) / (1 - ac)
        # The first posterior variance is 0; the release repeats the second before taking the log. A
        # one-step respacing has no second (the release fails there): its only step adds no noise, so
        # beta stands in.
        clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]]) if len(b) > 1 else b
        self.posterior_log_variance_clipped = torch.log(clipped)
        self.posterior_mean_coef1 = b * torch.sqrt(ac_prev) / (1 - ac)
        self.posterior_mean_coef2 = (1 - ac_prev) * torch.sqrt(1 - b) / (1 - ac)
        self.log_betas = torch.log(b)

    def __len__(self):
        return len(self.betas)

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return table.to(t.device)[t].float().reshape(-1, *([1] * (x.ndim - 1)))

    def p_mean_variance(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True) -> dict:
        """mean, variance, log_variance and pred_xstart of p(x_{t-1} | x_t) from the 2C-channel output."""
        eps, var_values = model_output.split(x.shape[1], dim=1)
        min_log = self._at(self.posterior_log_variance_clipped, t, x)
        max_log = self._at(self.log_betas, t, x)
        frac = (var_values + 1) / 2  # learned range: interpolate between posterior variance and beta
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self._at(self.sqrt_recip_alphas_cumprod, t, x) * x - \
            self._at(self.sqrt_recipm1_alphas_cumprod, t, x) * eps
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean = self._at(self.posterior_mean_coef1, t, x) * pred_xstart + self._at(self.posterior_mean_coef2, t, x) * x
        return dict(mean=mean, variance=torch.exp(log_variance), log_variance=log_variance, pred_xstart=pred_xstart)
