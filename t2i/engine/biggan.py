"""BigGAN generator from pytorch-pretrained-biggan, frozen; only its inputs are optimised.

The latent is a noise vector and a vector of class logits (softmax gives the class mixture), as in
BigSleep. The noise is kept near the truncated normal the model was trained on by a regulariser and
a clamp, since CLIP gradients otherwise push it to extreme values the generator never saw.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from pytorch_pretrained_biggan.model import CONFIG_NAME, WEIGHTS_NAME, BigGANBatchNorm

from ..errors import WeightsMissing

NOISE_BOUND = 2.0  # the truncated-normal range BigGAN samples from


def load_biggan(directory: Path, download_hint: str = "") -> BigGAN:
    """config.json + pytorch_model.bin, as pytorch-pretrained-biggan writes them."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise WeightsMissing(f"missing {directory / name}" + (f": run `{download_hint}`" if download_hint else ""))
    model = BigGAN(BigGANConfig.from_json_file(directory / CONFIG_NAME))
    state = torch.load(directory / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    # BigGAN.from_pretrained loads with strict=False; we refuse a file that leaves weights unset.
    missing, _unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{directory / WEIGHTS_NAME} lacks {len(missing)} tensors (e.g. {missing[0]}); "
                         "it does not match config.json")
    return model.eval().requires_grad_(False)


def build_biggan(config_path: Path) -> BigGAN:
    """Random weights of the config's architecture (untrained presets, benchmarks).

    A freshly built BigGAN is not runnable as is: its spectral-norm vectors were never
    power-iterated, the unconditional batch-norm affine is uninitialised memory and the batch-norm
    statistics are placeholders, so activations overflow. Settle them the way training would have.
    """
    model = BigGAN(BigGANConfig.from_json_file(config_path)).eval().requires_grad_(False)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_orig"):  # spectral norm: u, v = top singular vectors
                w = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
                u, _, vh = torch.linalg.svd(w, full_matrices=False)
                module.weight_u.copy_(u[:, 0])
                module.weight_v.copy_(vh[0])
            if isinstance(module, BigGANBatchNorm) and not module.conditional:
                module.weight.fill_(1.0)
                module.bias.zero_()
        _calibrate_batch_norm(model)
    return model


def _calibrate_batch_norm(model: BigGAN, batch: int = 8) -> None:
    """Set every batch norm's statistics (all truncation rows) to those of its input on random latents."""
    def set_stats(module, args):
        x = args[0]
        module.running_means.copy_(x.mean(dim=(0, 2, 3)).expand_as(module.running_means))
        module.running_vars.copy_(x.var(dim=(0, 2, 3)).expand_as(module.running_vars))

    hooks = [m.register_forward_pre_hook(set_stats) for m in model.modules() if isinstance(m, BigGANBatchNorm)]
    try:
        cfg = model.config
        model(torch.randn(batch, cfg.z_dim).clamp(-NOISE_BOUND, NOISE_BOUND),
              torch.softmax(torch.randn(batch, cfg.num_classes), -1), 1.0)
    finally:
        for h in hooks:
            h.remove()


class BigGANGenerator(torch.nn.Module):
    kind = "biggan"

    def __init__(self, model: BigGAN, truncation: float = 1.0, reg_weight: float = 0.1):
        super().__init__()
        self.model = model
        self.truncation = truncation
        self.reg_weight = reg_weight
        self.size = int(model.config.output_dim)
        self.factor = self.size

    def fit_size(self, width: int, height: int) -> tuple[int, int]:
        # BigGAN draws at one resolution only; the used size is reported to the caller.
        return self.size, self.size

    def init_latent(self, width: int, height: int, gen: torch.Generator, init_image=None) -> list[torch.Tensor]:
        if init_image is not None:
            raise ValueError("init images need a generator with an encoder; BigGAN presets have none")
        cfg, device = self.model.config, next(self.model.parameters()).device
        noise = torch.empty(1, cfg.z_dim, device=gen.device)
        torch.nn.init.trunc_normal_(noise, 0.0, 1.0, -NOISE_BOUND, NOISE_BOUND, generator=gen)
        noise = noise * self.truncation
        # Start from a few random classes rather than a uniform mix, which renders as grey mush.
        classes = torch.randn(1, cfg.num_classes, generator=gen, device=gen.device) * 2 - 2
        return [noise.to(device).requires_grad_(True), classes.to(device).requires_grad_(True)]

    def decode(self, latent: list[torch.Tensor], progress: torch.Tensor | None = None) -> torch.Tensor:
        noise, classes = latent
        image = self.model(noise, torch.softmax(classes, dim=-1), self.truncation)
        return image.add(1).div(2).clamp(0, 1)

    @torch.no_grad()
    def clamp_(self, latent: list[torch.Tensor]) -> None:
        latent[0].clamp_(-NOISE_BOUND, NOISE_BOUND)

    def reg_loss(self, latent: list[torch.Tensor]) -> torch.Tensor:
        noise = latent[0]
        # Keep the noise's statistics those of a unit normal (mean 0, std 1).
        return self.reg_weight * (noise.mean().pow(2) + (noise.std() - 1).pow(2))
