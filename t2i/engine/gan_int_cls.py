"""GAN-INT-CLS (Reed et al. 2016): a DCGAN generator and discriminator for 64x64 RGB, conditioned on a
text embedding projected to 128 dimensions.

    G(e, z):  projection(e) (Linear + BatchNorm1d + LeakyReLU) concatenated with z (100) as a 1x1 map,
              then five ConvTranspose layers to 64x64, tanh
    D(x, e):  four strided convs to (ndf*8, 4, 4) = the features (for feature matching), the projected
              embedding replicated over the 4x4 cells and concatenated, then a 4x4 conv to one score

Module and attribute names are those of the widely used PyTorch port (aelnouby/Text-to-Image-Synthesis,
models/gan_cls.py and utils.py's Concat_embed, read through the code search): `projection`, `netG`;
`netD_1`, `projector.projection`, `netD_2` with the same Sequential indices, so its checkpoints load
unchanged. Two differences that change no key: D returns the logit (the port's netD_2 ends in a
Sigmoid, which has no parameters; we use BCE-with-logits, which is stable where BCE on a saturated
sigmoid is not), and the projection's LeakyReLU is not in-place. `batch_norm=False` is the port's
"improved" (WGAN) critic without BatchNorm in netD_1, whose Sequential indices differ accordingly.
Minibatch discrimination (Salimans et al. 2016, the port's `minibatch_discriminator`, which it never
wired in) is an option: its B features per sample are replicated at 4x4 beside the projection.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import BrokenWeights, load_failure

IMAGE_SIZE = 64
NOISE_DIM = 100
PROJECTED_DIM = 128
EMBED_DIM = 1024     # the original char-CNN-RNN embeddings (the port's and the paper's)
NGF = NDF = 64       # the port's widths: the "full-width" DCGAN


def _projection(embed_dim: int, projected_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(embed_dim, projected_dim), nn.BatchNorm1d(projected_dim), nn.LeakyReLU(0.2))


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation, as the port's Utils.weights_init: convs N(0, 0.02), BatchNorm scale
    N(1, 0.02) and bias 0 (Linear layers keep torch's default, as there)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def settle(generator: "Generator", batches: int = 4, n: int = 64) -> "Generator":
    """Random weights made runnable: BatchNorm's running statistics are those of a fresh module (mean 0,
    variance 1), under which DCGAN's N(0, 0.02) convs shrink the signal layer by layer to a flat grey
    image. A few train-mode passes on N(0, 1) embeddings and noise give them the statistics training
    would have started from (a cumulative average: momentum None). Returns the generator in eval mode."""
    norms = [m for m in generator.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    generator.train()
    for _ in range(batches):
        generator(torch.randn(n, generator.embed_dim), torch.randn(n, generator.noise_dim))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return generator.eval()


class Whiten(nn.Module):
    """ZCA whitening of the text embedding, fitted once on the training captions' embeddings and kept
    as buffers (saved with the net): e -> (e - mean) V diag((lambda + eps)^-1/2) V^T. Why: a caption
    encoder trained contrastively puts what its image tower sees easily (colours) in large directions
    and the rest (the flowers world's petal counts: 1/47 of the colours' between-class variance) in
    small ones, and the linear maps that read the embedding in G and D weigh each direction by its
    size, so a count barely moves them. Whitened, every direction the encoder uses has unit variance;
    `eps` (added to each variance) keeps the directions it does not use (variance far below eps) near
    zero instead of blowing their noise up. A few lines of torch.linalg.eigh: scikit-learn's PCA would
    add a library for one decomposition. Starts as the identity (mean 0, matrix I)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    @torch.no_grad()
    def fit(self, embeds: torch.Tensor, eps: float) -> "Whiten":
        embeds = embeds.double()
        variances, vectors = torch.linalg.eigh(torch.cov(embeds.T))
        scale = (variances.clamp(min=0) + eps).rsqrt()
        self.mean.copy_(embeds.mean(0))
        self.matrix.copy_(vectors @ torch.diag(scale) @ vectors.T)
        return self

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return (embed - self.mean) @ self.matrix


class PolarChannels(nn.Module):
    """Fixed polar coordinates about the image's centre appended to a feature map: the radius and
    cos(k theta), sin(k theta) for k = 1..frequencies (CoordConv, Liu et al. 2018, in polar form, with
    the angle as Fourier features as NeRF and CIPS give positions). Why: a transposed conv is
    translation-equivariant, so a pattern that repeats n times around the centre (n petals) has to be
    built from the noise and the text by the layers themselves; with these channels a text-conditioned
    affine can pick an angular frequency. A buffer rebuilt from the size, not saved, so a file holds
    only learned weights."""

    def __init__(self, size: int, frequencies: int):
        super().__init__()
        axis = (torch.arange(size) + 0.5) / size * 2 - 1          # pixel centres in (-1, 1)
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        theta = torch.atan2(y, x)
        k = torch.arange(1, frequencies + 1, dtype=torch.float32)[:, None, None]
        basis = torch.cat([torch.hypot(x, y)[None], torch.cos(k * theta), torch.sin(k * theta)])
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.basis.to(x.dtype).expand(len(x), -1, -1, -1)], 1)


class Generator(nn.Module):
    """The port's `generator`: G(embedding (n, d), z (n, 100) or (n, 100, 1, 1)) -> (n, 3, 64, 64) in [-1, 1].

    `affine=True` adds text-conditioned affine transformations after each BatchNorm (DF-GAN's deep
    fusion, Tao et al. 2022; conditional BatchNorm in BigGAN's terms): per layer, a linear map of the
    projected text gives a scale and a shift per channel, x = BN(x) (1 + gamma) + beta, starting at
    the identity. The text then steers every resolution, not only the first 4x4 map. The port's keys
    are unchanged; the maps are extra keys (`affine.N.*`), so the port's checkpoints load with
    affine=False, the default."""

    def __init__(self, embed_dim: int = EMBED_DIM, ngf: int = NGF, noise_dim: int = NOISE_DIM,
                 projected_dim: int = PROJECTED_DIM, affine: bool = False, whiten: bool = False, polar: int = 0):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, ngf=ngf, noise_dim=noise_dim, projected_dim=projected_dim)
        # Only when set, so the port's architecture records (and files) stay as they were.
        self.config.update({k: True for k, on in (("affine", affine), ("whiten", whiten)) if on})
        self.config.update({"polar": polar} if polar else {})
        self.embed_dim, self.noise_dim = embed_dim, noise_dim
        self.whiten = Whiten(embed_dim) if whiten else None  # keys whiten.mean, whiten.matrix
        self.projection = _projection(embed_dim, projected_dim)
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers = [nn.ConvTranspose2d(noise_dim + projected_dim, widths[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU(True)]                       # 4x4
        extra = 1 + 2 * polar if polar else 0  # PolarChannels' maps, read by the convs from 16x16 and 32x32
        for a, b in zip(widths, widths[1:]):                                        # 8, 16, 32
            layers += [nn.ConvTranspose2d(a + (extra if b == ngf else 0), b, 4, 2, 1, bias=False), nn.BatchNorm2d(b),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf + extra, 3, 4, 2, 1, bias=False), nn.Tanh()]    # 64x64
        self.netG = nn.Sequential(*layers)
        self.polar = nn.ModuleDict({str(i): PolarChannels(size, polar) for i, size in
                                    ((len(layers) - 5, 16), (len(layers) - 2, 32))}) if polar else None
        self.affine = nn.ModuleDict({str(i): nn.Linear(projected_dim, 2 * m.num_features)
                                     for i, m in enumerate(layers) if isinstance(m, nn.BatchNorm2d)}) if affine else None
        for m in (self.affine or {}).values():
            nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)

    def forward(self, embed: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        projected = self.projection(embed if self.whiten is None else self.whiten(embed))
        # The port's order: the projection first, then the noise.
        x = torch.cat([projected[:, :, None, None], z.reshape(len(z), -1, 1, 1)], 1)
        if self.affine is None and self.polar is None:
            return self.netG(x)
        for i, layer in enumerate(self.netG):
            if self.polar is not None and str(i) in self.polar:
                x = self.polar[str(i)](x)
            x = layer(x)
            if self.affine is not None and str(i) in self.affine:
                gamma, beta = self.affine[str(i)](projected)[:, :, None, None].chunk(2, 1)
                x = x * (1 + gamma) + beta
        return x


class ConcatEmbed(nn.Module):
    """The port's Concat_embed: the projected embedding replicated over the 4x4 cells, after the features."""

    def __init__(self, embed_dim: int, projected_dim: int):
        super().__init__()
        self.projection = _projection(embed_dim, projected_dim)

    def forward(self, features: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        projected = self.projection(embed)[:, :, None, None].expand(-1, -1, *features.shape[2:])
        return torch.cat([features, projected], 1)


class MinibatchDiscrimination(nn.Module):
    """Salimans et al.'s minibatch features: each sample's L1 closeness to every other sample in B
    learned projections of C dims (the port's minibatch_discriminator, parameter `T_tensor`). A
    collapsed generator makes samples close to each other, which D then sees."""

    def __init__(self, channels: int, b_dim: int = 128, c_dim: int = 16):
        super().__init__()
        self.b_dim, self.c_dim = b_dim, c_dim
        self.T_tensor = nn.Parameter(torch.randn(channels * 16, b_dim * c_dim) * 0.1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        m = (features.flatten(1) @ self.T_tensor).view(-1, self.b_dim, self.c_dim)
        distance = (m[:, None] - m[None]).abs().sum(-1)            # (n, n, B)
        return torch.exp(-distance).sum(1) - 1                      # less the sample's own exp(0)


class Discriminator(nn.Module):
    """The port's `discriminator`: D(images (n, 3, 64, 64), embedding (n, d)) -> (logits (n,), features
    (n, ndf*8, 4, 4)); the features are what feature matching compares."""

    def __init__(self, embed_dim: int = EMBED_DIM, ndf: int = NDF, projected_dim: int = PROJECTED_DIM,
                 batch_norm: bool = True, minibatch: bool = False, b_dim: int = 128, c_dim: int = 16):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, ndf=ndf, projected_dim=projected_dim, batch_norm=batch_norm,
                           minibatch=minibatch, b_dim=b_dim, c_dim=c_dim)
        widths = [ndf, ndf * 2, ndf * 4, ndf * 8]
        layers = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]   # 32x32, no norm (DCGAN)
        for a, b in zip(widths, widths[1:]):                                          # 16, 8, 4
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False)]
            layers += [nn.BatchNorm2d(b)] if batch_norm else []
            layers += [nn.LeakyReLU(0.2, True)]
        self.netD_1 = nn.Sequential(*layers)
        self.projector = ConcatEmbed(embed_dim, projected_dim)
        self.minibatch = MinibatchDiscrimination(ndf * 8, b_dim, c_dim) if minibatch else None
        extra = b_dim if minibatch else 0
        self.netD_2 = nn.Sequential(nn.Conv2d(ndf * 8 + projected_dim + extra, 1, 4, 1, 0, bias=False))

    def forward(self, images: torch.Tensor, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.netD_1(images)
        x = self.projector(features, embed)
        if self.minibatch is not None:
            x = torch.cat([x, self.minibatch(features)[:, :, None, None].expand(-1, -1, 4, 4)], 1)
        return self.netD_2(x).view(-1), features


class ProjectionDiscriminator(nn.Module):
    """A training-time alternative to the port's D (presets load generators only, so its layout is
    free): spectrally normalised convs without BatchNorm (no statistics shared between the rows of a
    batch, as the hinge and gradient-penalty terms assume), then Miyato & Koyama's projection,
    score = w . phi(x) + <V e, phi(x)>, phi(x) the features summed over the 4x4 cells. The text
    enters as an inner product with the image's features rather than as channels beside them, which
    is what made conditional GANs follow their labels (cGANs with projection discriminator, 2018;
    DF-GAN's matching-aware discriminator scores the same pairs). Returns (logits (n,), features
    (n, ndf*8, 4, 4)) like `Discriminator`, so the losses take either."""

    def __init__(self, embed_dim: int = EMBED_DIM, ndf: int = NDF, spectral: bool = True, joint: bool = False,
                 classes: tuple[int, ...] = (), blind: tuple[bool, ...] = (), whiten: bool = False, tower: int = 0):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, ndf=ndf, spectral=spectral, joint=joint, classes=tuple(classes),
                           blind=tuple(blind), whiten=whiten, tower=tower)
        self.whiten = Whiten(embed_dim) if whiten else None  # G's (the trainer fits both on the same texts)
        sn = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        widths = [3, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers = []
        for a, b in zip(widths, widths[1:]):                                          # 32, 16, 8, 4
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.score = sn(nn.Linear(ndf * 8, 1))
        self.embed = sn(nn.Linear(embed_dim, ndf * 8, bias=False))
        # joint: also the port's head, the text replicated over the 4x4 cells beside the features and
        # one conv over both, which sees where things are (the sum in phi does not): petal counts.
        self.joint = nn.Sequential(sn(nn.Conv2d(ndf * 8 + PROJECTED_DIM, ndf * 8, 1)), nn.LeakyReLU(0.2, True),
                                   sn(nn.Conv2d(ndf * 8, 1, 4))) if joint else None
        self.text = sn(nn.Linear(embed_dim, PROJECTED_DIM)) if joint else None
        # classes: TAC-GAN's auxiliary classifier, one head per attribute over the whole 4x4 map (where
        # things are, for counts), read by `classify` only. Plain linear layers: they score classes,
        # not real against fake, so the Lipschitz bound spectral norm gives the score is not theirs.
        # `blind` marks the heads that read a colour-blind copy of the image instead (the caller's
        # `blind_features`): see t2i/train/gan_tricks.colour_blind.
        self.blind = tuple(blind) if any(blind) else ()
        # tower: a second, narrower conv stack of D's own for the blind heads, reading only the
        # colour-free copy, its features also projected against the text into the score. Issue 26: the
        # shared features, trained by the colour-led score, never learnt the petal count (D's own
        # reading of it stayed near chance with the blind head on them); a stack that sees no colour
        # and is scored on the count both as a class and as a text match has nothing else to learn.
        self.tower = self.tower_embed = None
        if tower:
            tw = [3, tower, tower * 2, tower * 4, tower * 4]
            self.tower = nn.Sequential(*[m for a, b in zip(tw, tw[1:]) for m in (sn(nn.Conv2d(a, b, 4, 2, 1)),
                                                                                nn.LeakyReLU(0.2, True))])
            self.tower_embed = sn(nn.Linear(embed_dim, tower * 4, bias=False))
        widths = [tower * 4 * 16 if tower and self.blind and self.blind[i] else ndf * 8 * 16 for i in range(len(classes))]
        self.heads = nn.ModuleList(nn.Linear(w, k) for w, k in zip(widths, classes))

    def blind_features(self, view: torch.Tensor) -> torch.Tensor:
        """What the blind heads read of the colour-free copy `view`: the tower's features, or the shared ones."""
        return (self.tower if self.tower is not None else self.features)(view)

    def classify(self, features: torch.Tensor, blind_features: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each attribute head's logits (n, k) from forward's features (the blind heads' from
        `blind_features`, the features of the colour-blind copy, when the net has blind heads)."""
        return [head((blind_features if self.blind and self.blind[i] else features).flatten(1))
                for i, head in enumerate(self.heads)]

    def forward(self, images: torch.Tensor, embed: torch.Tensor,
                view: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`view`: the colour-free copy of `images` the tower reads (required with a tower)."""
        features = self.features(images)
        embed = embed if self.whiten is None else self.whiten(embed)
        phi = features.sum((2, 3))
        score = self.score(phi).view(-1) + (self.embed(embed) * phi).sum(1)
        if self.tower is not None:
            if view is None:
                raise ValueError("this discriminator has a count tower: pass the colour-free view (gan_tricks.with_view)")
            score = score + (self.tower_embed(embed) * self.tower(view).sum((2, 3))).sum(1)
        if self.joint is not None:
            text = self.text(embed)[:, :, None, None].expand(-1, -1, *features.shape[2:])
            score = score + self.joint(torch.cat([features, text], 1)).view(-1)
        return score, features


# --- checkpoints ------------------------------------------------------------------------------------

def read_state(path: str | Path) -> dict:
    """A state dict from a file: a bare one (the port's torch.save(net.state_dict())), or one under
    "state_dict" (t2i.fp16.save_checkpoint's format); one line when the file is not a checkpoint."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated files and foreign formats fail in the unpickler's own ways
        first = load_failure(e)
        raise BrokenWeights(f"{path} is not a readable checkpoint ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BrokenWeights(f"{path} holds no state dict of tensors")
    return state


def strip_data_parallel(state: dict) -> dict:
    """Keys without DataParallel's `module.` prefix, when every key has it (the port trains its nets
    wrapped in DataParallel and saves the wrapper's state)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state(module: nn.Module, state: dict, what: str) -> nn.Module:
    """Load strictly, floats cast to the module's fp32 (our committed files are fp16); a checkpoint of
    another architecture is one line naming its first missing, unexpected or mis-shaped key."""
    state = strip_data_parallel(state)
    own = module.state_dict()
    problems = [("missing", sorted(set(own) - set(state))), ("unexpected", sorted(set(state) - set(own))),
                ("mis-shaped", sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape))]
    for kind, keys in problems:
        if keys:
            first = keys[0]
            shapes = f" ({tuple(state[first].shape)} in the file, {tuple(own[first].shape)} here)" \
                if kind == "mis-shaped" else ""
            raise BrokenWeights(f"{what} is not this GAN-INT-CLS architecture ({module.config}): {len(keys)} "
                                f"{kind} key(s), the first {first}{shapes}")
    module.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()})
    return module


def load_generator(path: str | Path, **config) -> Generator:
    """A generator of the given architecture (Generator's arguments) with the file's weights, in eval
    mode (BatchNorm on its running statistics, so each sample is independent of its batch)."""
    return load_state(Generator(**config), read_state(path), str(path)).eval()
