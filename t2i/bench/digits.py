"""DigitsBench: does the `digits` preset draw the digit it is asked for, and not one copy of it?

For each of the ten bench prompts ("the digit zero" ... "the digit nine", t2i/data/digits.py), one job
of `n` samples at the preset's default sampler, steps and guidance runs through the Runner (the jobs
are batched like an executor would batch them); a digit classifier trained here on the procedural
world (t2i/train/digit_classifier.py, at least 99% on held-out renders; it never sees the generator)
judges every sample. Reported: the fraction classified as asked, per digit and overall, and per
digit the diversity ratio: the mean pairwise L2 distance among 16 samples over that among 16
training renders of the digit (1 = as varied as the world; targets: 97% and 0.5). Not a test:
figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..data import digits
from ..engine import run_batches
from ..families import build_pipeline
from ..paths import resolve_weights_file
from ..presets import get_preset
from ..spec import make_spec
from ..train.digit_classifier import judge, load_classifier

CLASSIFIER = "builtin:digits/digits-classifier.pt"


def digitsbench(preset_name: str = "digits", n: int = 20, device: str = "cpu", seed: int = 0, steps: int | None = None,
                guidance: float | None = None, sampler: str | None = None, progress: bool = True, cache=None) -> dict:
    preset = get_preset(preset_name)
    pipeline = build_pipeline(preset, device=device)
    classifier = load_classifier(resolve_weights_file(CLASSIFIER), hint="python -m t2i train-demo --world digits")
    specs = [make_spec(prompt, preset.name, family=preset.family, defaults=preset.defaults, seed=seed + d,
                       num_samples=n, steps=steps, guidance=guidance, sampler=sampler, cache=cache)
             for d, prompt in enumerate(digits.PROMPTS)]
    images, asked = [], []
    results = run_batches(specs, pipeline, batch=len(specs))
    for d, result in enumerate(tqdm(results, total=len(specs), desc="DigitsBench", disable=not progress)):
        samples = result.samples or [result.image]
        images += [np.asarray(im.convert("L")) for im in samples]
        asked += [d] * len(samples)
    verdict = judge(np.stack(images), asked, classifier, seed=seed)
    s = specs[0]
    return {"preset": preset.name, "n": n, "settings": f"{s.options.sampler} {s.options.steps} steps, guidance "
                                                       f"{s.options.guidance:g}, cache {s.options.cache}",
            **verdict}


def report(result: dict) -> list[str]:
    per, div = result["per_digit"], result["diversity"]
    return [f"DigitsBench: preset {result['preset']}, {result['n']} samples per digit, {result['settings']}",
            "| digit | " + " | ".join(str(d) for d in range(10)) + " | all |",
            "| --- |" + " --- |" * 11,
            "| asked digit drawn | " + " | ".join(f"{per[d]:.0%}" for d in range(10)) + f" | {result['accuracy']:.1%} |",
            "| diversity ratio | " + " | ".join(f"{div[d]:.2f}" for d in range(10))
            + f" | min {result['diversity_min']:.2f} |"]
