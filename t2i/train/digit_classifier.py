"""The digits world's judge: a small CNN digit classifier, its training, and the bench's `judge`.

It is trained on renders (or the caller's MNIST) and never sees the generator, so DigitsBench can
ask it whether a generated image shows the asked digit. It must reach 99% on the held-out "test"
split of the digits world (unseen combinations of distortions). Training adds light noise and blur
to the renders: generated samples are less clean than renders, and a judge that only knew perfect
strokes would call an imperfect but legible digit wrong.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import digits
from ..data.digits import to_float
from ..engine.charclip import load_model
from ..assets.fp16 import save_checkpoint
from .schedule import optimise

STEPS = 200
BATCH = 128
LR = 3e-3


class DigitClassifier(nn.Module):
    """(n, 1, 32, 32) in [0, 1] -> (n, 10) logits."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.config = {"width": width}
        w = width

        def block(cin, cout):
            # GroupNorm: a label never depends on batch-mates (the bench judges batches of any mix).
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(), nn.MaxPool2d(2)]

        self.net = nn.Sequential(*block(1, w), *block(w, 2 * w), *block(2 * w, 2 * w), nn.Flatten(),
                                 nn.Linear(2 * w * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, a little blur on some images, and contrast changes (see the module docstring)."""
    n = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = (torch.rand(n, 1, 1, 1, generator=gen) < 0.3).float()
    x = pick * (0.5 * x + 0.5 * blurred) + (1 - pick) * x
    x = x * (0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen))
    x = x + torch.randn(x.shape, generator=gen) * 0.08 * torch.rand(n, 1, 1, 1, generator=gen)
    return x.clamp(0, 1)


def train_classifier(steps: int = STEPS, seed: int = 0, data: digits.Sampler | None = None,
                     batch: int = BATCH, progress: bool = True) -> tuple[DigitClassifier, list[float]]:
    """Train on fresh batches from `data` (the digits world's train split by default)."""
    data = data or digits.sampler("train")
    rng = np.random.default_rng([seed, 2])
    gen = torch.Generator().manual_seed(seed * 1000 + 2)
    torch.manual_seed(seed * 1000 + 2)  # the initial weights
    model = DigitClassifier()

    def step_loss():
        images, labels, _ = data(batch, rng)
        return F.cross_entropy(model(augment(to_float(images), gen)), torch.from_numpy(labels))

    losses = optimise(model.parameters(), step_loss, steps, LR, 1e-4, "digit classifier", progress)
    return model.eval().requires_grad_(False), losses


@torch.no_grad()
def classify(model: DigitClassifier, images) -> np.ndarray:
    """int64 labels (n,) for uint8 or float images (n, 32, 32) / (n, 1, 32, 32)."""
    x = to_float(images).to(next(model.parameters()).device)
    return np.concatenate([model(x[i:i + 512]).argmax(1).cpu().numpy() for i in range(0, len(x), 512)]
                          or [np.zeros(0, np.int64)])


def held_out_accuracy(model: DigitClassifier, n: int = 2000, seed: int = 12345) -> float:
    """Accuracy on renders of the held-out "test" split (unseen distortion combinations)."""
    images, labels, _ = digits.sample(n, np.random.default_rng(seed), "test")
    return float((classify(model, images) == labels).mean())


def save_classifier(model: DigitClassifier, path: str | os.PathLike) -> None:
    save_checkpoint(model, path)


def load_classifier(path: str | os.PathLike, device="cpu", hint: str = "") -> DigitClassifier:
    return load_model(DigitClassifier, path, "digit classifier", device, hint)


def _mean_pairwise_l2(images: np.ndarray) -> float:
    x = images.reshape(len(images), -1).astype(np.float64) / 255
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return float(d[np.triu_indices(len(x), 1)].mean())


def judge(images, digits_asked: list[int], classifier: DigitClassifier, reference_n: int = 16,
          seed: int = 0) -> dict:
    """How well generated images show the asked digits.

    accuracy: the fraction classified as asked; per_digit: that per asked digit; diversity: per digit,
    the mean pairwise L2 distance among (up to 16 of) its images over that among `reference_n`
    training renders of the digit (1 = as varied as the world, 0 = one image repeated);
    diversity_min: the smallest of those."""
    x = to_float(images)
    asked = np.asarray(digits_asked, np.int64)
    if len(asked) != len(x):
        raise ValueError(f"judge got {len(x)} images for {len(asked)} asked digits")
    u8 = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    right = classify(classifier, x) == asked
    rng = np.random.default_rng(seed)
    per_digit, diversity = {}, {}
    for d in sorted(set(asked.tolist())):
        mine = asked == d
        per_digit[d] = float(right[mine].mean())
        if mine.sum() >= 2:
            reference = digits.render_batch(np.full(reference_n, d), rng, "train")
            diversity[d] = _mean_pairwise_l2(u8[mine][:16]) / _mean_pairwise_l2(reference)
    return {"accuracy": float(right.mean()) if len(right) else 0.0, "per_digit": per_digit,
            "diversity": diversity, "diversity_min": min(diversity.values(), default=0.0)}
