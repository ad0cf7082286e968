"""GLIDE (filtered) networks in plain PyTorch, laid out so the official base.pt / upsample.pt load unchanged.

Text2ImUNet is the ADM UNet (scale-shift ResBlocks, ResBlock up/down-sampling, attention at chosen
resolutions) whose attention layers also attend to the text transformer's tokens, and whose timestep
embedding gets the projection of the transformer's last token added. SuperResText2ImUNet takes the
noisy high-res image and the bilinearly upsampled low-res image as six input channels.

The module names mirror the release's so that state-dict keys match; the maths follows the paper and
the release's public description (per-head interleaved QKV, text keys/values placed before the image
ones, norms and softmax computed in float32).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

VOCAB_SIZE = 50257  # GPT-2 BPE; token 50256 pads

# model_and_diffusion_defaults() / ..._upsampler() of the release, in our argument names.
BASE = dict(image_size=64, model_channels=192, num_res_blocks=3, channel_mult=(1, 2, 3, 4),
            attention_resolutions=(32, 16, 8), num_head_channels=64, text_ctx=128, xf_width=512,
            xf_layers=16, xf_heads=8)
UPSAMPLE = dict(BASE, image_size=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 whatever the model's dtype, as the release does."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosines first; t is the original (not respaced) timestep."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """ADM residual block with scale-shift norm; up/down resample inside the block when asked."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0,
                 up: bool = False, down: bool = False):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.resample = "up" if up else "down" if down else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x):
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb):
        # Resample between the norm/activation and the conv, on both paths, as ADM does.
        h = self._resample(self.in_layers[:-1](x))
        h = self.in_layers[-1](h)
        x = self._resample(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class AttentionBlock(nn.Module):
    """Self-attention over pixels that also attends to the text tokens (encoder_kv)."""

    def __init__(self, channels: int, num_heads: int, encoder_channels: int | None):
        super().__init__()
        self.num_heads = num_heads
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, channels * 2, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x, encoder_out=None):
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        heads, length = self.num_heads, qkv.shape[-1]
        ch = c // heads
        # The release's "legacy" order: per head, [q; k; v] stacked along channels.
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
        if encoder_out is not None:
            ek, ev = self.encoder_kv(encoder_out).reshape(b * heads, 2 * ch, -1).split(ch, dim=1)
            k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
        return x + self.proj_out(h).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """Passes the timestep embedding to ResBlocks and the text tokens to AttentionBlocks."""

    def forward(self, x, emb, encoder_out=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


# -- text transformer ---------------------------------------------------------------------------

class MultiheadAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x):
        b, n, width = x.shape
        ch = width // self.heads
        # Per head [q, k, v] along the last axis; no causal mask (padding is an embedding, not a mask).
        q, k, v = self.c_qkv(x).reshape(b, n, self.heads, 3 * ch).split(ch, dim=-1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bthc,bshc->bhts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        return self.c_proj(torch.einsum("bhts,bshc->bthc", weight, v).reshape(b, n, width))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm(width)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


# -- the UNets ----------------------------------------------------------------------------------

class Text2ImUNet(nn.Module):
    """GLIDE's 64x64 base model: forward(x, t, tokens, mask) -> (B, 6, H, W), eps then variance values.

    t is the original diffusion timestep (a respaced sampler maps its indices first).
    """

    def __init__(self, *, image_size: int, model_channels: int, num_res_blocks: int, channel_mult: tuple,
                 attention_resolutions: tuple, num_head_channels: int, text_ctx: int, xf_width: int,
                 xf_layers: int, xf_heads: int, in_channels: int = 3, out_channels: int = 6,
                 vocab_size: int = VOCAB_SIZE, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.model_channels, self.text_ctx = in_channels, model_channels, text_ctx
        self.image_size = image_size
        attention_ds = {image_size // r for r in attention_resolutions}
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attention(ch):
            return AttentionBlock(ch, ch // num_head_channels, xf_width)

        ch = channel_mult[0] * model_channels
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_ds:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(ResBlock(ch, emb_dim, ch, dropout, down=True)))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_dim, ch, dropout), attention(ch),
                                                    ResBlock(ch, emb_dim, ch, dropout))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_ds:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, ch, dropout, up=True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

        self.transformer = Transformer(xf_width, xf_layers, xf_heads)
        self.final_ln = LayerNorm(xf_width)
        self.token_embedding = nn.Embedding(vocab_size, xf_width)
        self.positional_embedding = nn.Parameter(torch.empty(text_ctx, xf_width))
        self.transformer_proj = nn.Linear(xf_width, emb_dim)
        self.padding_embedding = nn.Parameter(torch.empty(text_ctx, xf_width))
        # The release leaves these two uninitialised (torch.empty), harmless when base.pt is loaded over
        # them but NaN-prone for random weights (the fixtures' tiny models show it): start them small.
        for p in (self.positional_embedding, self.padding_embedding):
            nn.init.normal_(p, std=0.01)

    def text_embedding(self, tokens: torch.Tensor, mask: torch.Tensor):
        """(xf_proj (B, 4*model_channels), xf_out (B, xf_width, text_ctx)) for padded tokens and their mask."""
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        # Padded positions get a learned embedding in place of token + position; no attention mask.
        xf_in = torch.where(mask[..., None].bool(), xf_in, self.padding_embedding[None])
        xf_out = self.final_ln(self.transformer(xf_in))
        return self.transformer_proj(xf_out[:, -1]), xf_out.permute(0, 2, 1)

    def forward(self, x, timesteps, tokens, mask):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        xf_proj, xf_out = self.text_embedding(tokens, mask)
        emb = emb + xf_proj.to(emb)
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, xf_out)
            hs.append(h)
        h = self.middle_block(h, emb, xf_out)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, xf_out)
        return self.out(h)


class SuperResText2ImUNet(Text2ImUNet):
    """GLIDE's 64->256 upsampler: forward(x, t, tokens, mask, low_res) with low_res in [-1, 1]."""

    def __init__(self, *, in_channels: int = 3, **kwargs):
        super().__init__(in_channels=in_channels * 2, **kwargs)

    # The release's signature: the upsampler takes the low-res image besides the base model's inputs.
    def forward(self, x, timesteps, tokens, mask, low_res):  # type: ignore[override]
        up = F.interpolate(low_res, x.shape[-2:], mode="bilinear", align_corners=False)
        return super().forward(torch.cat([x, up], dim=1), timesteps, tokens, mask)


def glide_base(**overrides) -> Text2ImUNet:
    """The base model with the release's default options; keyword arguments override them."""
    return Text2ImUNet(**{**BASE, **overrides})


def glide_upsample(**overrides) -> SuperResText2ImUNet:
    return SuperResText2ImUNet(**{**UPSAMPLE, **overrides})


def release_options(options: dict) -> dict:
    """Our keyword arguments from the release's create_model_and_diffusion options (tiny test models)."""
    size = options["image_size"]
    mult = options["channel_mult"]
    default_mult = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
    unsupported = {k: options.get(k) for k, want in (("use_scale_shift_norm", True), ("resblock_updown", True),
                                                    ("xf_final_ln", True), ("xf_padding", True), ("inpaint", False))
                   if options.get(k, want) != want}
    if unsupported or options.get("num_head_channels", -1) <= 0:
        raise ValueError(f"GLIDE options not supported here: {unsupported or 'num_head_channels'}")
    return dict(image_size=size, model_channels=options["num_channels"], num_res_blocks=options["num_res_blocks"],
                channel_mult=tuple(int(m) for m in mult.split(",")) if mult else default_mult[size],
                attention_resolutions=tuple(int(r) for r in options["attention_resolutions"].split(",")),
                num_head_channels=options["num_head_channels"], text_ctx=options["text_ctx"],
                xf_width=options["xf_width"], xf_layers=options["xf_layers"], xf_heads=options["xf_heads"],
                dropout=options.get("dropout", 0.0))
