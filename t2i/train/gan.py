"""Training GAN-INT-CLS (Reed et al. 2016) with the stabilisers of the widely used PyTorch port.

    train(data, out, epochs=..., steps_per_epoch=..., config=GanConfig(...)) -> Trained

`data` is any callable `batch(n, gen) -> (images, embeddings[, extras])`: images uint8 (n, 3, 64, 64) or
float in [-1, 1], embeddings (n, d), optionally what the optional terms read (gan_data.captioned:
the semantic term's match, the auxiliary classifier's labels), every random draw from the torch.Generator it is given (t2i/train/gan_data.py). One step is one generator update, after one
discriminator update (gan) or `diter` critic updates (wgan, wgan-gp), each on a fresh batch.

Losses (d_losses / g_losses, each term by name so tests and logs can see them):
- D: real image + its text scored real (target 0.9: one-sided label smoothing), G's image scored fake;
  `cls`: real image + mismatched text (the batch's embeddings rolled by one) scored fake, as the paper,
  real + (fake + wrong) / 2. WGAN: the same terms as critic means; weights clipped to +-0.01 after each
  critic update (wgan) or a gradient penalty (wgan-gp, lambda 10, on a critic without BatchNorm in its
  conv stack, since the penalty is per sample). hinge: max(0, 1 - s) for real, max(0, 1 + s) for fake
  and wrong (SAGAN, BigGAN, DF-GAN).
- G: fool D on its image; `int`: also on images of interpolated embeddings 0.5 (e1 + e2) (D never
  trains on those: they have no real image); feature matching (D's 4x4 features, batch means, MSE,
  weight l2_coef) and L1 to the real image (l1_coef, 0 by default: a per-pixel loss against one real
  image per caption rewards the average of every flower that fits it, a blur that ignores the noise).

Later GANs' additions (t2i/train/gan_tricks.py), each off by default so the port's recipe stays the
default: `d_arch="projection"` (a spectrally normalised projection discriminator), `augment`
(DiffAugment on everything D sees), `ma_gp` (DF-GAN's matching-aware gradient penalty), `ms_coef`
(MSGAN's mode-seeking term), `ema` (generator.pt is the moving average of G's weights), `semantic_coef`
(AttnGAN's DAMSM-style term: the frozen caption encoder passed to train() as `encoder` must find each
image's caption among the batch's; the embeddings must be that encoder's), `aux_coef` (TAC-GAN's
auxiliary attribute classifier in D: needs a source with labels, the flowers world's; `count_tower`
gives its colour-free heads a conv stack of their own, also scored against the text; `aux_fake` a class
"made by G" that D learns on G's images).

Output folder: checkpoint.pt (everything to resume: nets, optimisers, the generator's state, history),
written at each epoch's end through a temporary file and os.replace, so a kill mid-write leaves the
last good one; generator.pt (the generator alone, fp16, {"config", "state_dict"}: what a preset loads);
samples/epoch-NNN.png (fixed texts and noise, so epochs compare); losses.png. One thread and one seeded
generator for everything: a run is the same bytes on one machine, and a resumed run continues the
uninterrupted one exactly.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..engine.charclip import CharCLIP
from ..engine.gan_int_cls import NOISE_DIM, Discriminator, Generator, ProjectionDiscriminator, init_weights
from ..errors import T2IError
from .gan_data import BatchSource
from .ema import Ema
from .gan_state import check_finite, mean, resume, save_atomic, write_epoch  # noqa: F401 - save_atomic: our API too
from .gan_tricks import (AUGMENTS, auxiliary, colour_blind, colour_scrambled, diff_augment, gradient_penalty, hard_wrong,
                         made_by_g, matching_aware_gp, mode_seeking, semantic, with_view)
from .threads import torch_threads

TYPES = ("gan", "hinge", "wgan", "wgan-gp")
D_ARCHS = ("concat", "projection", "joint")  # the port's D (text as channels), the projection D, or both heads
SAMPLES = 16  # images in each epoch's sample grid
WHITEN_TEXTS = 4096  # captions the whitening is fitted on (about 9 s of the flowers world's renders, once a run)


@dataclass(frozen=True)
class GanConfig:
    type: str = "gan"
    cls: bool = True              # matching-aware discriminator
    int: bool = True              # manifold interpolation (named as the paper's GAN-INT)
    minibatch: bool = False       # minibatch discrimination in D
    ngf: int = 64
    ndf: int = 64
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    l1_coef: float = 0.0          # the port's 50 averages the flowers of a caption into one blur
    l2_coef: float = 100.0        # feature matching (the port's)
    real_target: float = 0.9      # one-sided label smoothing
    diter: int = 5                # critic updates per generator update (wgan, wgan-gp)
    clip: float = 0.01            # wgan weight clipping
    gp_lambda: float = 10.0       # wgan-gp
    seed: int = 0
    d_arch: str = "concat"
    augment: str = ""             # DiffAugment policies, comma-separated: translation, cutout
    ma_gp: float = 0.0            # DF-GAN's matching-aware gradient penalty weight (k; 2 there)
    ms_coef: float = 0.0          # MSGAN's mode-seeking weight
    ema: float = 0.0              # decay of the generator's moving average (0: none)
    affine: bool = False          # G: text-conditioned affines after every BatchNorm (DF-GAN's fusion)
    lr_d: float = 0.0             # D's learning rate when not lr (TTUR: Heusel et al. 2017)
    beta2: float = 0.999
    semantic_coef: float = 0.0    # AttnGAN's DAMSM-style image-text matching term for G (needs `encoder`)
    aux_coef: float = 0.0         # TAC-GAN's auxiliary attribute classifier (projection D, labelled data)
    aux_blind: bool = False       # its heads the source marks colour-free (counts) read colour-blind copies
    aux_scramble: bool = False    # those copies colour-scrambled (hue rotated, channels shuffled), not grey
    whiten: float = 0.0           # G and D read the text embedding ZCA-whitened, this epsilon (0: raw)
    hard_negatives: float = 0.0   # share of `cls`'s wrong pairs whose text differs in one attribute only
    count_tower: int = 0          # width of D's own stack for the blind heads, scored against the text too
    polar: int = 0                # G: polar coordinate channels at 16x16 and 32x32, this many angular frequencies
    aux_fake: bool = False        # the heads get a class "made by G", which D learns on fakes (K+1 classes)

    def __post_init__(self):
        if self.type not in TYPES:
            raise T2IError(f"--type must be one of {', '.join(TYPES)}, got {self.type!r}")
        if self.d_arch not in D_ARCHS:
            raise T2IError(f"--d-arch must be one of {', '.join(D_ARCHS)}, got {self.d_arch!r}")
        unknown = [p for p in self.policy if p not in AUGMENTS]
        if unknown:
            raise T2IError(f"--augment: unknown policy {unknown[0]!r} (use {', '.join(AUGMENTS)})")
        if not 0 <= self.ema < 1:
            raise T2IError(f"--ema must be in [0, 1), got {self.ema}")
        if (self.aux_scramble or self.count_tower) and not (self.aux_blind and self.aux_coef):
            raise T2IError("--aux-scramble and --count-tower change what the colour-blind heads read: they need "
                           "--aux-blind and --aux-coef")
        if self.aux_fake and not self.aux_coef:
            raise T2IError("--aux-fake adds a class to the auxiliary classifier's heads: it needs --aux-coef")
        if not 0 <= self.hard_negatives <= 1 or (self.hard_negatives and not self.cls):
            raise T2IError(f"--hard-negatives is a share of the matching-aware wrong pairs, 0 to 1 (with --cls); "
                           f"got {self.hard_negatives}{'' if self.cls else ' with --no-cls'}")
        if self.polar < 0:
            raise T2IError(f"--polar is a number of angular frequencies (0: off), got {self.polar}")
        if self.whiten < 0 or (self.whiten and self.d_arch == "concat"):
            raise T2IError(f"--whiten must be 0 (off) or a positive epsilon, with --d-arch projection or "
                           f"joint; got {self.whiten} with {self.d_arch}")

    @property
    def policy(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.augment.split(",") if p.strip())

    @property
    def wasserstein(self) -> bool:
        return self.type in ("wgan", "wgan-gp")


@dataclass
class Trained:
    generator: Generator
    discriminator: Discriminator
    step: int
    history: list[dict]           # per step: every loss term's value
    # `generator` is what generator.pt holds: the moving average when config.ema, else G itself


def make_nets(config: GanConfig, embed_dim: int, classes: tuple[int, ...] = (),
              blind: tuple[bool, ...] = ()) -> tuple[Generator, Discriminator]:
    g = Generator(embed_dim, config.ngf, affine=config.affine, whiten=bool(config.whiten), polar=config.polar)
    init_weights(g)
    if config.d_arch in ("projection", "joint"):  # torch's own initialisation: spectral norm rescales anyway
        heads = tuple(k + config.aux_fake for k in classes) if config.aux_coef else ()  # aux_fake: + "made by G"
        return g, ProjectionDiscriminator(embed_dim, config.ndf, joint=config.d_arch == "joint", classes=heads,
                                          blind=blind if config.aux_coef and config.aux_blind else (),
                                          whiten=bool(config.whiten), tower=config.count_tower)
    d = Discriminator(embed_dim, config.ndf, batch_norm=config.type != "wgan-gp", minibatch=config.minibatch)
    init_weights(d)
    return g, d


# --- losses ---------------------------------------------------------------------------------------

def _blind_view(config: GanConfig):
    """What D's colour-free heads read: a grey copy (aux_blind), or a colour-scrambled one (aux_scramble)."""
    return colour_scrambled if config.aux_scramble else colour_blind


def _blind_features(config: GanConfig, d, seen: torch.Tensor, gen: torch.Generator | None):
    """D's features of the colour-free copy of `seen` for its blind heads; None when it has none."""
    return d.blind_features(_blind_view(config)(seen, gen)) if d.blind else None


def _real(score: torch.Tensor, config: GanConfig, target: float, generator: bool = False) -> torch.Tensor:
    """The term pushing scores towards "real": BCE to `target`, minus the critic's mean, or the hinge
    (D's max(0, 1 - s); G's plain -s, as SAGAN's, so G keeps a gradient past the margin)."""
    if config.wasserstein or (config.type == "hinge" and generator):
        return -score.mean()
    if config.type == "hinge":
        return F.relu(1 - score).mean()
    return F.binary_cross_entropy_with_logits(score, torch.full_like(score, target))


def _fake(score: torch.Tensor, config: GanConfig) -> torch.Tensor:
    if config.wasserstein:
        return score.mean()
    if config.type == "hinge":
        return F.relu(1 + score).mean()
    return F.binary_cross_entropy_with_logits(score, torch.zeros_like(score))


def _augmenter(config: GanConfig, gen: torch.Generator | None):
    policy = config.policy
    return (lambda x: diff_augment(x, policy, gen)) if policy and gen is not None else (lambda x: x)


def d_losses(config: GanConfig, g: Generator, d: Discriminator, real: torch.Tensor, embed: torch.Tensor,
             wrong_embed: torch.Tensor, z: torch.Tensor, gen: torch.Generator,
             true: torch.Tensor | None = None, negative: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """D's terms on one batch; "total" is what it descends. The fake images are detached: D's step
    does not move G. `true`: the real images' attribute classes (the auxiliary classifier's);
    `negative`: each real image's hard-negative caption embedding (`hard_negatives`)."""
    aug, d = _augmenter(config, gen), with_view(d, _blind_view(config), gen)
    if config.hard_negatives and config.cls:
        wrong_embed = hard_wrong(wrong_embed, negative, config.hard_negatives)
    with torch.no_grad():
        fake = g(embed, z)
    real_seen = aug(real)
    real_score, real_features = d(real_seen, embed)
    fake_seen = aug(fake)
    fake_score, fake_features = d(fake_seen, embed)
    terms = {"real": _real(real_score, config, config.real_target), "fake": _fake(fake_score, config)}
    if config.cls:
        terms["wrong"] = _fake(d(aug(real), wrong_embed)[0], config)
        terms["total"] = terms["real"] + 0.5 * (terms["fake"] + terms["wrong"])
    else:
        terms["total"] = terms["real"] + terms["fake"]
    if config.type == "wgan-gp":
        terms["gp"] = gradient_penalty(d, real, fake, embed, gen)
        terms["total"] = terms["total"] + config.gp_lambda * terms["gp"]
    if config.ma_gp:
        terms["ma_gp"] = matching_aware_gp(d, real_seen, embed)
        terms["total"] = terms["total"] + config.ma_gp * terms["ma_gp"]
    if config.aux_coef:
        blind = _blind_features(config, d, real_seen, gen)
        terms["aux"] = auxiliary(d, real_features, true, blind)
        if config.aux_fake:  # after the real term's, so a run without it draws what it drew before
            blind = _blind_features(config, d, fake_seen, gen)
            terms["aux"] = terms["aux"] + auxiliary(d, fake_features, made_by_g(d, len(fake)), blind)
        terms["total"] = terms["total"] + config.aux_coef * terms["aux"]
    return terms


def g_losses(config: GanConfig, g: Generator, d: Discriminator, real: torch.Tensor, embed: torch.Tensor,
             z: torch.Tensor, partner_embed: torch.Tensor, z_int: torch.Tensor,
             gen: torch.Generator | None = None, encoder: CharCLIP | None = None,
             extras: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """G's terms on one batch; "total" is what it descends. `partner_embed` is what `int` mixes each
    embedding with; `z_int` the noise for those images (and the second noise of the mode-seeking
    term); `gen` draws the augmentations; `encoder` and extras["match"] serve the semantic term,
    extras["asked"] (what each caption names) the auxiliary classifier's."""
    aug, d = _augmenter(config, gen), with_view(d, _blind_view(config), gen)
    fake = g(embed, z)
    fake_seen = aug(fake)  # what D sees of it, the blind head's copy included
    score, fake_features = d(fake_seen, embed)
    with torch.no_grad():
        real_features = d(aug(real), embed)[1]
    terms = {"adv": _real(score, config, 1.0, generator=True)}
    if config.int:
        mixed = 0.5 * (embed + partner_embed)
        terms["int"] = _real(d(aug(g(mixed, z_int)), mixed)[0], config, 1.0, generator=True)
    terms["fm"] = F.mse_loss(fake_features.mean(0), real_features.mean(0))
    terms["l1"] = F.l1_loss(fake, real)
    total = sum(v for k, v in terms.items() if k in ("adv", "int")) + \
        config.l2_coef * terms["fm"] + config.l1_coef * terms["l1"]
    if config.ms_coef:
        terms["ms"] = mode_seeking(fake, g(embed, z_int), z, z_int)
        total = total + config.ms_coef * terms["ms"]
    if config.semantic_coef:
        terms["semantic"] = semantic(encoder, fake, embed, (extras or {}).get("match"))
        total = total + config.semantic_coef * terms["semantic"]
    if config.aux_coef:
        blind = _blind_features(config, d, fake_seen, gen)
        terms["aux"] = auxiliary(d, fake_features, extras["asked"], blind)
        total = total + config.aux_coef * terms["aux"]
    terms["total"] = total
    return terms


# --- the loop -------------------------------------------------------------------------------------

def as_images(images) -> torch.Tensor:
    """uint8 (n, 3, 64, 64) or float in [-1, 1] -> float in [-1, 1]."""
    images = torch.as_tensor(images)
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def _batch(data: BatchSource, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
    images, embeds, *extras = data(n, gen)
    return as_images(images), torch.as_tensor(embeds).float(), (extras[0] if extras else {})


def train_step(config: GanConfig, g, d, opt_g, opt_d, data: BatchSource, gen: torch.Generator,
               encoder: CharCLIP | None = None) -> dict[str, float]:
    """One generator update after its discriminator update(s); returns the last values of every term."""
    n = config.batch_size
    for _ in range(config.diter if config.wasserstein else 1):
        real, embed, extras = _batch(data, n, gen)
        z = torch.randn(n, g.noise_dim, generator=gen)
        dl = d_losses(config, g, d, real, embed, embed.roll(1, 0), z, gen, extras.get("true"),
                      extras.get("negative"))
        opt_d.zero_grad()
        dl["total"].backward()
        opt_d.step()
        if config.type == "wgan":
            for p in d.parameters():
                p.data.clamp_(-config.clip, config.clip)
    d.requires_grad_(False)  # G's step needs gradients through D, not for it
    z, z_int = torch.randn(2, n, g.noise_dim, generator=gen)
    gl = g_losses(config, g, d, real, embed, z, embed.roll(2, 0), z_int, gen, encoder, extras)
    opt_g.zero_grad()
    gl["total"].backward()
    opt_g.step()
    d.requires_grad_(True)
    return {f"d_{k}": v.item() for k, v in dl.items()} | {f"g_{k}": v.item() for k, v in gl.items()}


def train(data: BatchSource, out: str | Path, *, epochs: int, steps_per_epoch: int,
          config: GanConfig = GanConfig(), progress: bool = True, encoder: CharCLIP | None = None) -> Trained:
    """Train to `epochs` epochs of `steps_per_epoch` steps, resuming from out/checkpoint.pt when it is
    there (the same config required); writes the files the module docstring lists. `encoder`: the
    frozen caption encoder whose text embeddings `data` serves (read only by the semantic term)."""
    if config.semantic_coef and encoder is None:
        raise T2IError("--semantic-coef needs the caption encoder whose embeddings the data holds "
                       "(train-demo --world flowers passes it); it has no meaning for other embeddings")
    if config.hard_negatives and not getattr(data, "negatives", False):
        raise T2IError("--hard-negatives needs data that writes a hard-negative caption for each image (the "
                       "flowers world in train-demo); this source has none")
    if config.aux_coef and not (getattr(data, "classes", ()) and config.d_arch != "concat"):
        raise T2IError("--aux-coef needs the projection discriminator (--d-arch projection) and data with "
                       "attribute labels (the flowers world in train-demo); this source has none")
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    with torch_threads():
        gen = torch.Generator().manual_seed(config.seed)
        # Fixed texts and noise for the epochs' sample grids, drawn before anything else.
        sample_images, sample_embeds, _ = _batch(data, SAMPLES, torch.Generator().manual_seed(config.seed + 1))
        sample_z = torch.randn(SAMPLES, NOISE_DIM, generator=torch.Generator().manual_seed(config.seed + 2))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            g, d = make_nets(config, sample_embeds.shape[1], getattr(data, "classes", ()), getattr(data, "blind", ()))
        # Fitted on texts of their own draw (the batches' stream stays as it was); a resumed run reads
        # the fitted buffers back from its checkpoint instead of rendering the texts again.
        if config.whiten and not (out / "checkpoint.pt").exists():
            _, embeds, _ = _batch(data, WHITEN_TEXTS, torch.Generator().manual_seed(config.seed + 3))
            g.whiten.fit(embeds, config.whiten)
            d.whiten.load_state_dict(g.whiten.state_dict())
        opt_g = torch.optim.Adam(g.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
        opt_d = torch.optim.Adam(d.parameters(), lr=config.lr_d or config.lr, betas=(config.beta1, config.beta2))
        ema = Ema(g, config.ema) if config.ema else None
        step, history = resume(out / "checkpoint.pt", config, g, d, opt_g, opt_d, gen, ema)
        first_epoch = step // steps_per_epoch
        if step % steps_per_epoch:
            raise T2IError(f"{out / 'checkpoint.pt'} is at step {step}, not an epoch's end of {steps_per_epoch} "
                           "steps: resume with the steps per epoch it was trained with")
        for epoch in range(first_epoch, epochs):
            g.train(), d.train()
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
            for _ in bar:
                history.append(train_step(config, g, d, opt_g, opt_d, data, gen, encoder))
                step += 1
                if ema is not None:
                    ema.update(g)
                check_finite(history[-1], step, () if step % steps_per_epoch else (("G", g), ("D", d)))
                bar.set_postfix(d=f"{history[-1]['d_total']:.3f}", g=f"{history[-1]['g_total']:.3f}")
            write_epoch(out, epoch, g, d, opt_g, opt_d, gen, step, history, config, sample_embeds, sample_z,
                         sample_images, ema)
            if progress:
                last = history[-steps_per_epoch:]
                tqdm.write(f"epoch {epoch + 1}/{epochs}, step {step}: D {mean(last, 'd_total'):.4f}, "
                           f"G {mean(last, 'g_total'):.4f}")
        return Trained((ema.net if ema else g).eval(), d.eval(), step, history)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t2i.train.gan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (resumed when it holds a checkpoint)")
    parser.add_argument("--data", default="shapes",
                        help="shapes (the shapes world, untrained text embedding) or a seed-layout HDF5 file "
                             "(a converted flowers.hd5: its own embeddings)")
    parser.add_argument("--split", default="train", help="the HDF5 file's split to train on")
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--type", choices=TYPES, default="gan")
    parser.add_argument("--cls", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--int", action=argparse.BooleanOptionalAction, default=True)
    defaults = GanConfig()
    for f in fields(GanConfig):
        if f.name not in ("type", "cls", "int"):
            flag = f"--{f.name.replace('_', '-')}"
            kind = (lambda v: v.lower() in ("1", "true", "yes")) if f.type in ("bool", bool) else type(getattr(defaults, f.name))
            parser.add_argument(flag, type=kind, default=getattr(defaults, f.name))
    args = vars(parser.parse_args(argv))
    config = GanConfig(**{f.name: args[f.name] for f in fields(GanConfig)})
    from .gan_data import hdf5_source, shapes_source

    data = shapes_source(args["embed_dim"]) if args["data"] == "shapes" else hdf5_source(args["data"], args["split"])
    train(data, args["out"], epochs=args["epochs"],
          steps_per_epoch=args["steps_per_epoch"], config=config)
    return 0


if __name__ == "__main__":
    import sys

    try:
        raise SystemExit(main())
    except T2IError as e:  # bad settings, data or checkpoints: one line, as the t2i CLI does
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
