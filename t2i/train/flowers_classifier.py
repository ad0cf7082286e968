"""The flowers world's classifier and the Inception-score-like figures it gives a generator's images.

    train_classifier(steps=STEPS, seed=0, progress=True) -> (FlowersClassifier, losses)
    held_out_accuracy(model, n=1000, seed=12345)          -> {"colour", "centre", "petals", "all"}
    references(model, n=500, seed=7)                      -> the figures of real renders and of noise
    inception_like(images, classifier)                    -> exp(E_x KL(p(y|x) || p(y))), 1 .. 210
    diversity(images, classifier=None)                    -> mean pairwise distance (see below)
    save_classifier(model, path) / load_classifier(path)  -> fp16 {"config", "state_dict"}

NOT the Inception network: `inception_like` is the Inception score's formula over this small CNN's
predictions of the world's three judged attributes, so its values are on another scale from the
seed's Inception score of 3.73 (Inception-v3 on Oxford-102 photos, 1000 ImageNet classes) and do not
compare with it. It compares generators of this world with each other and with two references:
real renders (an upper reference: every class confidently and evenly predicted) and noise.

The classifier reads a 64x64 RGB image with three heads, petal colour (7), centre colour (6) and
petal count (5); p(y|x) for the score is the product of the three heads over the 7 x 6 x 5 = 210
triples (15 of which, same petal and centre colour, never occur). It trains on renders of every
combination, the held-out split's included (POOL renders drawn once, 85% train split, 15% held-out,
so combinations come about evenly), with flips, brightness and noise (a generator's images are less
clean than renders), and is judged on fresh renders of the held-out split (other scene seeds).
Why not the train split alone: there a colour pair comes with only some counts, and a count head
learns that shortcut before petals (measured: 16% on held-out combinations, below chance, while
colours were 98-100%); a judge of generators must read what is drawn. The counts are what takes
the steps: 67% after 300, 95% after 600 (a wider or deeper net did not learn faster per second).

`diversity` is the mean pairwise Euclidean distance between images' L2-normalised penultimate
features of the classifier (0 for one image repeated, at most 2) when a classifier is given; without
one, the pixel version: the mean pairwise RMS difference of the RGB values in [0, 1] (no LPIPS).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import flowers
from ..engine.charclip import load_model
from ..assets.fp16 import save_checkpoint
from .schedule import optimise
from .threads import torch_threads

HEADS = {"colour": tuple(flowers.PETAL_COLOURS), "centre": tuple(flowers.CENTRE_COLOURS),
         "petals": flowers.PETAL_COUNTS}
STEPS = 600   # about 95 s on one thread (0.15 s a step, 5 s of renders)
BATCH = 64
POOL = 4096   # renders drawn once (5 s); flips double them
LR = 3e-3


class FlowersClassifier(nn.Module):
    """(n, 3, 64, 64) in [0, 1] -> {"colour": (n, 7), "centre": (n, 6), "petals": (n, 5)} logits."""

    def __init__(self, width: int = 16, features: int = 128):
        super().__init__()
        self.config = {"width": width, "features": features}
        w = width

        def block(cin, cout):
            # GroupNorm: an image's prediction never depends on its batch-mates.
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(), nn.MaxPool2d(2)]

        # 64 -> 4 pixels in four halvings; a 4x4 map (not a global pool) keeps where petals are,
        # which the count needs.
        self.body = nn.Sequential(*block(3, w), *block(w, 2 * w), *block(2 * w, 4 * w), *block(4 * w, 4 * w),
                                  nn.Flatten(), nn.Linear(4 * w * 16, features), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(features, len(values)) for name, values in HEADS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(x)
        return {name: head(f) for name, head in self.heads.items()}


def labels_of(scenes: list[flowers.Scene]) -> dict[str, torch.Tensor]:
    """Per head, int64 (n,) indices of each scene's (described) flower's value."""
    return {name: torch.tensor([values.index(getattr(s.flower, name)) for s in scenes]) for name, values in HEADS.items()}


def to_float(images) -> torch.Tensor:
    """uint8 images (n, 3, h, w) or (n, h, w, 3), or float ones in [0, 1] -> float (n, 3, 64, 64)
    (other sizes resized with antialiasing)."""
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise ValueError(f"flowers images must be (n, 3, h, w) or (n, h, w, 3), got {tuple(x.shape)}")
    if x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if x.shape[-2:] != (flowers.SIZE, flowers.SIZE):
        x = F.interpolate(x, size=(flowers.SIZE, flowers.SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random flip per batch (attributes do not change; the renders are already turned at random),
    and per image brightness and noise."""
    n = x.shape[0]
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-1)
    x = x * (0.85 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen))
    return (x + torch.randn(x.shape, generator=gen) * 0.05 * torch.rand(n, 1, 1, 1, generator=gen)).clamp(0, 1)


def train_classifier(steps: int = STEPS, seed: int = 0, progress: bool = True, pool: int = POOL,
                     batch: int = BATCH) -> tuple[FlowersClassifier, list[float]]:
    """Train on batches from a pool of `pool` renders of every combination (module docstring; one
    thread: the same weights on every run on one machine); the loss is the heads' cross-entropies summed."""
    train = round(pool * (1 - flowers.HELDOUT_PER_MILLE / 1000))
    a, _, s = flowers.sample(train, np.random.default_rng([seed, 31, 0]), "train")
    b, _, t = flowers.sample(pool - train, np.random.default_rng([seed, 31, 1]), "heldout")
    x_all, y_all = to_float(np.concatenate([a, b])), labels_of(s + t)
    gen = torch.Generator().manual_seed(seed * 1000 + 31)
    with torch_threads():
        torch.manual_seed(seed * 1000 + 31)  # the initial weights
        model = FlowersClassifier()

        def step_loss():
            pick = torch.randint(pool, (batch,), generator=gen)
            logits = model(augment(x_all[pick], gen))
            return sum(F.cross_entropy(logits[k], y_all[k][pick]) for k in HEADS)

        losses = optimise(model.parameters(), step_loss, steps, LR, 1e-4, "flowers classifier", progress)
    return model.eval().requires_grad_(False), losses


@torch.no_grad()
def probabilities(images, classifier: FlowersClassifier) -> dict[str, torch.Tensor]:
    """Per head, float64 (n, values) softmax of the classifier, 256 images at a time."""
    x = to_float(images)
    device = next(classifier.parameters()).device
    parts = [classifier(x[i:i + 256].to(device)) for i in range(0, len(x), 256)]
    return {k: torch.cat([F.softmax(p[k].double(), 1).cpu() for p in parts]) for k in HEADS}


def held_out_accuracy(model: FlowersClassifier, n: int = 1000, seed: int = 12345) -> dict[str, float]:
    """Accuracy per head and of all three at once on n fresh renders of the held-out split (scene
    seeds the training pool did not use)."""
    images, _, scenes = flowers.sample(n, np.random.default_rng(seed), "heldout")
    probs, truth = probabilities(images, model), labels_of(scenes)
    right = {k: probs[k].argmax(1) == truth[k] for k in HEADS}
    return {**{k: float(r.float().mean()) for k, r in right.items()},
            "all": float(torch.stack(list(right.values())).all(0).float().mean())}


def joint(probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 210): p(colour) p(centre) p(petals) over every triple, from the three heads."""
    c, z, p = (probs[k] for k in HEADS)
    return (c[:, :, None, None] * z[:, None, :, None] * p[:, None, None, :]).reshape(len(c), -1)


def inception_like(images, classifier: FlowersClassifier) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over the classifier's 210 (petal colour, centre colour, count)
    triples, p(y) the mean of p(y|x) over these images. 1.0 when every image gets the same
    prediction; up to the number of triples the images show, when each is confidently one of them and
    they are evenly spread. Not the Inception network's score (module docstring)."""
    p = joint(probabilities(images, classifier))
    if len(p) == 0:
        raise ValueError("inception_like needs at least one image")
    marginal = p.mean(0, keepdim=True)
    # 0 log 0 = 0; the clamp only keeps log finite where p is 0 (there the product is 0 anyway).
    kl = (p * (p.clamp_min(1e-300).log() - marginal.clamp_min(1e-300).log())).sum(1)
    return float(torch.exp(kl.mean()))


def _mean_pairwise(v: torch.Tensor) -> float:
    if len(v) < 2:
        raise ValueError("diversity needs at least two images")
    d = torch.cdist(v.double(), v.double())
    return float(d[torch.triu_indices(len(v), len(v), 1).unbind()].mean())


@torch.no_grad()
def features(images, classifier: FlowersClassifier) -> torch.Tensor:
    """(n, features) penultimate features of the classifier, 256 images at a time, on the CPU."""
    x = to_float(images)
    device = next(classifier.parameters()).device
    return torch.cat([classifier.features(x[i:i + 256].to(device)).cpu() for i in range(0, len(x), 256)])


@torch.no_grad()
def diversity(images, classifier: FlowersClassifier | None = None) -> float:
    """Mean pairwise distance among the images: of the classifier's L2-normalised penultimate
    features when one is given (0 .. 2), else the pixel version, the RMS difference of RGB in [0, 1]."""
    x = to_float(images)
    if classifier is None:
        return _mean_pairwise(x.reshape(len(x), -1)) / float(np.sqrt(x[0].numel()))
    return _mean_pairwise(F.normalize(features(x, classifier), dim=1))


@torch.no_grad()
def frechet(images, reference, classifier: FlowersClassifier) -> float:
    """FID's formula (Heusel et al. 2017) on this classifier's penultimate features: |mu1 - mu2|^2 +
    Tr(S1 + S2 - 2 (S1 S2)^1/2). Lower is closer to the reference images' statistics. The features
    are our flowers classifier's, not Inception's, so the number only compares with itself."""
    from scipy import linalg  # imported here: only the bench needs it (scipy comes with BigGAN's package)

    stats = []
    for x in (images, reference):
        f = features(x, classifier).double().numpy()
        stats.append((f.mean(0), np.cov(f, rowvar=False)))
    (m1, s1), (m2, s2) = stats
    # ReLU features leave some dimensions always 0, so the covariances are singular; a small ridge
    # (as pytorch-fid adds when the root is not finite) keeps the square root well defined.
    ridge = np.eye(len(m1)) * 1e-6
    root, _ = linalg.sqrtm((s1 + ridge) @ (s2 + ridge), disp=False)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root.real))


def save_classifier(model: FlowersClassifier, path: str | os.PathLike) -> None:
    save_checkpoint(model, path)


def load_classifier(path: str | os.PathLike, device="cpu", hint: str = "") -> FlowersClassifier:
    return load_model(FlowersClassifier, path, "flowers classifier", device, hint)


def references(model: FlowersClassifier, n: int = 500, seed: int = 7) -> dict[str, dict[str, float]]:
    """IS-like and diversity figures of n renders of each split (the upper references: the held-out
    split shows only its HELDOUT combinations, so its IS-like figure is bounded by their number) and
    of n images of uniform noise (the lower one)."""
    sets = {split: flowers.sample(n, np.random.default_rng([seed, 32, i]), split)[0]
            for i, split in enumerate(flowers.SPLITS)}
    sets["noise"] = torch.rand(n, 3, flowers.SIZE, flowers.SIZE, generator=torch.Generator().manual_seed(seed))
    return {name: {"inception_like": inception_like(x, model), "diversity": diversity(x, model),
                   "pixel_diversity": diversity(x)} for name, x in sets.items()}


def main(out_path: str | os.PathLike | None = None, steps: int = STEPS, seed: int = 0) -> None:
    """Train, print the held-out accuracy and the references, save to out_path when given."""
    start = time.perf_counter()
    model, losses = train_classifier(steps, seed)
    print(f"flowers classifier: {time.perf_counter() - start:.1f} s, last loss {np.mean(losses[-20:]):.3f}")
    print("held-out accuracy:", {k: round(v, 3) for k, v in held_out_accuracy(model).items()})
    if out_path:
        save_classifier(model, out_path)
    for name, figures in references(model).items():
        print(name, {k: round(v, 3) for k, v in figures.items()})


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
