"""VQGAN generator built from taming-transformers modules and loaded from real taming files.

Only `taming.modules.*` is imported: `taming.models.vqgan` pulls in `taming.main`, which breaks on
current pytorch-lightning. `TamingVQ` therefore mirrors the attribute names of taming's VQModel /
GumbelVQ (encoder, decoder, quantize, quant_conv, post_quant_conv) so their checkpoints load with
strict key matching.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pickle
from pathlib import Path

import torch
from omegaconf import OmegaConf
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

from ..errors import BrokenWeights, WeightsMissing, load_failure
from .prompts import replace_grad


VQ_TARGETS = {"taming.models.vqgan.VQModel": False, "taming.models.vqgan.GumbelVQ": True}
NET2NET_TARGET = "taming.models.cond_transformer.Net2NetTransformer"
KEPT_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


class TamingVQ(torch.nn.Module):
    """The autoencoder half of a taming VQModel (no loss, no Lightning)."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, gumbel: bool = False,
                 remap=None, sane_index_shape: bool = False):
        super().__init__()
        ddconfig = dict(ddconfig)
        self.encoder = Encoder(**ddconfig)
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its latent shape
            self.decoder = Decoder(**ddconfig)
        z = ddconfig["z_channels"]
        if gumbel:
            self.quantize = GumbelQuantize(z, embed_dim, n_embed=n_embed, remap=remap)
        else:
            self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25, remap=remap,
                                             sane_index_shape=sane_index_shape)
        self.quant_conv = torch.nn.Conv2d(z, embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, z, 1)
        self.gumbel = gumbel
        self.factor = 2 ** (len(ddconfig["ch_mult"]) - 1)

    @property
    def codebook(self) -> torch.Tensor:
        return (self.quantize.embed if self.gumbel else self.quantize.embedding).weight

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> nearest-code latent in embedding space (what decode expects)."""
        h = self.quant_conv(self.encoder(x))
        if self.gumbel:
            # quant_conv output feeds the Gumbel projection; argmax picks the code deterministically.
            idx = self.quantize.proj(h).argmax(1)
            return self.codebook[idx].permute(0, 3, 1, 2)
        return vector_quantize(h.movedim(1, 3), self.codebook).movedim(3, 1)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))


def read_taming_config(config_path: Path) -> dict:
    """Model params of a taming YAML (VQModel, GumbelVQ, or a Net2NetTransformer's first stage)."""
    cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    model = cfg.get("model", cfg)
    target = model.get("target")
    if target == NET2NET_TARGET:
        model = model["params"]["first_stage_config"]
        target = model.get("target")
    if target not in VQ_TARGETS:
        raise ValueError(f"{config_path}: unsupported model target {target!r}; "
                         f"expected one of {', '.join([*VQ_TARGETS, NET2NET_TARGET])}")
    p = model["params"]
    return dict(ddconfig=p["ddconfig"], n_embed=p["n_embed"], embed_dim=p["embed_dim"],
                gumbel=VQ_TARGETS[target], remap=p.get("remap"),
                sane_index_shape=p.get("sane_index_shape", False))


class _LightningStandIn:
    """Stands in for a Lightning object pickled beside the weights (never used): its state is kept
    as data, none of its code runs."""

    def __setstate__(self, state):
        self.state = state


# Lightning bookkeeping in taming's checkpoints that the safe loader would refuse: the callback
# class (a dict key under "callbacks") loads as an inert stand-in, hparams as the plain bag it is.
# Loading stays weights_only=True: a file from a mirror must not run code when opened.
LIGHTNING_SAFE = [argparse.Namespace, (_LightningStandIn, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")]


def _torch_load(path: Path):
    try:
        with torch.serialization.safe_globals(LIGHTNING_SAFE):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise BrokenWeights(f"{path} does not load ({load_failure(e)})") from None


def autoencoder_state(ckpt: dict) -> dict:
    """encoder/decoder/quantize/*_conv tensors of a taming checkpoint; `loss.*` and the rest dropped."""
    state = ckpt.get("state_dict", ckpt)
    if any(k.startswith("first_stage_model.") for k in state):  # Net2NetTransformer checkpoint
        state = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    return {k: v for k, v in state.items() if k.startswith(KEPT_PREFIXES)}


def load_taming(config_path: Path, ckpt_path: Path, download_hint: str = "") -> TamingVQ:
    for path in (config_path, ckpt_path):
        if not Path(path).is_file():
            raise WeightsMissing(f"missing {path}" + (f": run `{download_hint}`" if download_hint else ""))
    model = TamingVQ(**read_taming_config(config_path))
    model.load_state_dict(autoencoder_state(_torch_load(ckpt_path)), strict=True)
    return model.eval().requires_grad_(False)


def build_taming(config_path: Path) -> TamingVQ:
    """Random weights of the config's architecture (untrained presets, benchmarks)."""
    return TamingVQ(**read_taming_config(config_path)).eval().requires_grad_(False)


def vector_quantize(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest codebook entry, straight-through: forward quantised, gradient to x unchanged."""
    d = x.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * x @ codebook.T
    x_q = codebook[d.argmin(-1)]
    return replace_grad(x_q, x)


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose gradient still flows when it points back into range (so pixels can recover)."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


clamp_with_grad = _ClampWithGrad.apply


class VQGANGenerator(torch.nn.Module):
    """Latent: a continuous (1, e_dim, H/f, W/f) map, quantised straight-through on decode."""

    kind = "vqgan"

    def __init__(self, model: TamingVQ, init_fill: list[int] | None = None, unquantised_warmup: float = 0.0):
        super().__init__()
        self.model = model
        self.factor = model.factor
        warmup = float(unquantised_warmup)
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"unquantised_warmup must be a fraction of the run in [0, 1), got {unquantised_warmup}")
        # For this fraction of a job's steps the decoder sees the continuous latent: quantising from
        # the first step strands a small codebook's runs in patchworks of codes (local optima well
        # above the loss of a clean image); the rest of the run, and the result, are quantised.
        self.unquantised_warmup = warmup
        # A preset may start from the encoding of a plain image of this colour instead of random
        # codes: on a small decoder, random codes decode to texture the optimisation rarely leaves.
        self.init_fill = tuple(init_fill) if init_fill else None
        codebook = model.codebook.detach()
        self.register_buffer("z_min", codebook.min(0).values[None, :, None, None], persistent=False)
        self.register_buffer("z_max", codebook.max(0).values[None, :, None, None], persistent=False)

    def fit_size(self, width: int, height: int) -> tuple[int, int]:
        from ..spec import round_size

        return round_size(width, height, self.factor)

    def init_latent(self, width: int, height: int, gen: torch.Generator, init_image=None) -> list[torch.Tensor]:
        codebook = self.model.codebook
        if init_image is None and self.init_fill is not None:
            from PIL import Image

            init_image = Image.new("RGB", (width, height), self.init_fill)
        if init_image is not None:
            from torchvision.transforms import functional as TF

            x = TF.to_tensor(init_image.resize((width, height)))[None].to(codebook.device) * 2 - 1
            with torch.no_grad():
                z = self.model.encode_latent(x)
        else:
            h, w = height // self.factor, width // self.factor
            idx = torch.randint(codebook.shape[0], (h * w,), generator=gen, device=gen.device).to(codebook.device)
            z = codebook[idx].view(1, h, w, -1).permute(0, 3, 1, 2)
        return [z.detach().clone().requires_grad_(True)]

    def decode(self, latent: list[torch.Tensor], progress: torch.Tensor | None = None) -> torch.Tensor:
        """progress: (B,) fraction of each job's steps done; None (results, previews) quantises all."""
        z = latent[0]
        z_q = vector_quantize(z.movedim(1, 3), self.model.codebook).movedim(3, 1)
        if progress is not None and self.unquantised_warmup > 0:
            warming = (progress.to(z.device) < self.unquantised_warmup).view(-1, 1, 1, 1)
            z_q = torch.where(warming, z, z_q)
        return clamp_with_grad(self.model.decode(z_q).add(1).div(2), 0, 1)

    @torch.no_grad()
    def clamp_(self, latent: list[torch.Tensor]) -> None:
        latent[0].copy_(latent[0].maximum(self.z_min).minimum(self.z_max))

    def reg_loss(self, latent: list[torch.Tensor]) -> torch.Tensor | None:
        return None

