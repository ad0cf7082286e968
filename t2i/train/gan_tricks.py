"""What later GANs added to GAN-INT-CLS's training, as small pieces the trainer composes
(t2i/train/gan.py): WGAN-GP's gradient penalty (the port's `wgan-gp`), and what later text-to-image
GANs showed works, each measured on FlowersBench (BENCHMARKS.md, "The flowers GAN, one change at a
time"): differentiable augmentation, the matching-aware zero-centred gradient penalty, the
mode-seeking term and the semantic (image-text matching) term.

Written here rather than taken from a package: DiffAugment's and DF-GAN's reference code are research
repositories, not libraries on the index, and each piece is a few lines over torch. The moving
average is t2i/train/ema.py, shared with the shapes-ldm trainer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..engine.charclip import CharCLIP, matched_infonce

# DiffAugment's (Zhao et al. 2020) policies, less "color": brightness, saturation and contrast
# jitter would teach D that a red flower and a dull orange one are the same picture, and colour is
# what the captions ask for.
AUGMENTS = ("translation", "cutout")


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """The same random, differentiable transformations for real and fake images before D sees them;
    every draw from `gen` (a run stays reproducible). translation: shifts of up to 1/8 of the side,
    the edges filled with zeros; cutout: one square of half the side set to zero."""
    n, _, h, w = x.shape
    if "translation" in policy:
        shift = (torch.randint(-(h // 8), h // 8 + 1, (n, 2), generator=gen, device=x.device))
        rows = (torch.arange(h, device=x.device)[None] - shift[:, :1]).clamp(-1, h)   # (n, h)
        cols = (torch.arange(w, device=x.device)[None] - shift[:, 1:]).clamp(-1, w)   # (n, w)
        padded = F.pad(x, (1, 1, 1, 1))                                               # index -1 -> 0
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None] + 1, cols[:, None, :] + 1].permute(0, 3, 1, 2)
    if "cutout" in policy:
        size = h // 2
        corner = torch.randint(0, h - size + 1, (n, 2), generator=gen, device=x.device)
        ys = torch.arange(h, device=x.device)[None]
        xs = torch.arange(w, device=x.device)[None]
        inside_y = (ys >= corner[:, :1]) & (ys < corner[:, :1] + size)
        inside_x = (xs >= corner[:, 1:]) & (xs < corner[:, 1:] + size)
        x = x * ~(inside_y[:, None, :, None] & inside_x[:, None, None, :])
    return x


def gradient_penalty(d, real: torch.Tensor, fake: torch.Tensor, embed: torch.Tensor,
                     gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP's (|grad_x D(x)| - 1)^2 at random points between real and fake images (Gulrajani et al.
    2017), the norm taken per sample over all pixels."""
    alpha = torch.rand(len(real), 1, 1, 1, generator=gen, device=real.device)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x, embed)[0].sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def matching_aware_gp(d, real: torch.Tensor, embed: torch.Tensor, power: float = 6.0) -> torch.Tensor:
    """DF-GAN's MA-GP (Tao et al. 2022): the mean of |grad D(x, e)|^p at real images with their own
    texts, the gradient taken with respect to both the image and the embedding. It flattens D around
    the matching pairs, so G's fakes near them are pulled towards them (a zero-centred penalty, p = 6
    as the paper's; the caller weighs it, k = 2 there)."""
    x = real.detach().requires_grad_(True)
    e = embed.detach().requires_grad_(True)
    gx, ge = torch.autograd.grad(d(x, e)[0].sum(), (x, e), create_graph=True)
    norm = torch.sqrt(gx.flatten(1).pow(2).sum(1) + ge.pow(2).sum(1) + 1e-12)
    return norm.pow(power).mean()


def hard_wrong(rolled: torch.Tensor, negative: torch.Tensor, share: float) -> torch.Tensor:
    """The matching-aware term's wrong texts with the first `share` of the batch's rows replaced by
    each image's hard negative: its own caption with one judged attribute changed (the shapes CLIP's
    hard negatives, t2i/train/clip.py). A rolled caption almost always differs in colour, so D can
    reject it on colour alone and never needs the petal count; a caption that differs only in the
    count makes D read it, and G, scored by that D, draw it."""
    k = round(share * len(rolled))
    return torch.cat([negative[:k], rolled[k:]])


def mode_seeking(a: torch.Tensor, b: torch.Tensor, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019): 1 / (|G(e, za) - G(e, zb)| / |za - zb|), means of absolute
    differences. Two noises that give the same image make it large, so G is pushed to use its noise."""
    ratio = (a - b).abs().mean() / (za - zb).abs().mean()
    return 1 / (ratio + 1e-5)


def semantic(encoder: CharCLIP, images: torch.Tensor, embed: torch.Tensor,
             match: torch.Tensor | None = None) -> torch.Tensor:
    """AttnGAN's DAMSM loss at the sentence level (Xu et al. 2018): a frozen image-text encoder embeds
    G's images, and each image should pick its own caption out of the batch's (and each caption its
    own image), as the encoder itself was trained: the symmetric InfoNCE at the encoder's own
    temperature. `embed` must be that encoder's text embeddings (the flowers GAN is conditioned on
    them). `match` (captions x images) says which captions describe which images, so that a caption
    naming fewer attributes ("a red flower") is not a negative for another red flower's image;
    without it only each pair's own counts (a repeated caption needs no match: its two columns of
    logits are equal, and the plain target gives the same loss). Images in [-1, 1]; the encoder's
    tower takes [0, 1] (flowers_text.to_float)."""
    logits = encoder.scale * encoder.encode_image((images + 1) / 2) @ embed.T  # (images, captions)
    match = torch.eye(len(images)) if match is None else match
    return matched_infonce(logits, match.to(logits))


def colour_blind(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Each image as one grey made of its channels with random weights (summing to 1; equal without
    a generator), repeated over the three channels. A head that reads only these cannot tell which
    colours an image has: in the flowers world's train split a pair of colours comes with only some
    petal counts, and a count head that sees colour learns that shortcut (16% on held-out pairs,
    t2i/train/flowers_classifier.py) and teaches G the missing count is wrong."""
    w = torch.ones(len(x), 3) if gen is None else -torch.rand(len(x), 3, generator=gen).clamp(min=1e-6).log()
    w = (w / w.sum(1, keepdim=True)).to(x)  # exponential draws, normalised: a uniform point of the simplex
    return (w[:, :, None, None] * x).sum(1, keepdim=True).expand_as(x)


def colour_scrambled(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Each image with its colours moved at random: the RGB vector rotated about the grey axis by a
    random angle (a hue rotation: grey stays grey, lightness and contrast stay), then the channels in a
    random order. Images in [-1, 1], rotated about mid-grey. The colour-blind grey copy above loses too
    much: a count classifier trained 1000 steps on grey copies of train renders answered one count for
    every held-out render (12%; 22% on train renders), while one on scrambled copies read held-out
    combinations' counts 99.7% exactly (one on the plain renders learns the colour shortcut: 16%,
    t2i/train/flowers_classifier.py; BENCHMARKS.md, issue 26). Rodrigues' formula
    in a few lines: torchvision's adjust_hue takes one factor for a whole batch and goes through HSV,
    where a per-image rotation is one 3x3 matrix each. `gen` None: torch's global generator."""
    n = len(x)
    angle = torch.rand(n, generator=gen) * 2 * math.pi
    k = torch.full((3,), 3 ** -0.5)
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    rotation = cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(k, k)
    order = torch.stack([torch.randperm(3, generator=gen) for _ in range(n)])
    rotation = torch.gather(rotation, 1, order[:, :, None].expand(-1, -1, 3))  # the rows in a random order
    return torch.einsum("nij,njhw->nihw", rotation.to(x), x)


def auxiliary(d, features: torch.Tensor, labels: torch.Tensor, blind_features: torch.Tensor | None = None) -> torch.Tensor:
    """TAC-GAN's auxiliary classifier term (Dash et al. 2017, AC-GAN's (Odena et al. 2017) with text):
    the mean over attributes of the cross-entropy of D's heads (`d.classify`) against `labels` (n,
    attributes; -1 where unnamed, ignored). D learns it on real images with their true attributes, G
    on its images against what each caption names. Unlike AC-GAN, D never learns the asked classes from
    fakes: there it would learn to read G's mistakes as the asked class and stop teaching (`aux_fake`
    teaches it one class of their own instead, `made_by_g`)."""
    terms = [F.cross_entropy(logits, labels[:, i], ignore_index=-1, reduction="sum")
             for i, logits in enumerate(d.classify(features, blind_features))]
    return sum(terms) / (labels >= 0).sum().clamp(min=1)


def made_by_g(d, n: int) -> torch.Tensor:
    """Labels (n, attributes) naming each head's last class, "made by G" (`aux_fake`: the K+1-class
    discriminator of Salimans et al. 2016's semi-supervised GAN, per attribute). Why: heads trained on
    real renders only read whatever G draws as some class, and G learns to draw what they read, not
    what the checker counts (issue 26: soft discs read as "eight petals"). With a class of its own for
    G's images, a head gives the asked class only to what looks like a real flower of that class."""
    return torch.tensor([head.out_features - 1 for head in d.heads]).expand(n, -1)


class _Viewed:
    """A count-tower D called as the losses call every D, d(x, e) -> (score, features)."""

    def __init__(self, d, view, gen: torch.Generator | None):
        self.d, self.view, self.gen = d, view, gen

    def __call__(self, x: torch.Tensor, e: torch.Tensor):
        return self.d(x, e, self.view(x, self.gen))

    def __getattr__(self, name: str):  # blind, blind_features, classify: D's own
        return getattr(self.d, name)


def with_view(d, view, gen: torch.Generator | None):
    """`d`, or, for a D with a count tower (ProjectionDiscriminator's `tower`), `d` handed `view(x, gen)`
    on every call: the colour-free copy the tower reads. Any other D draws nothing more from `gen`."""
    return d if getattr(d, "tower", None) is None else _Viewed(d, view, gen)
