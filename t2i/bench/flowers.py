"""FlowersBench: does a gan preset draw the flower a held-out caption describes?

For n scenes of the flowers world's held-out split (petal colour, centre colour and count combinations
never seen in training), one job per canonical caption ("this flower has five pink petals and a
yellow center") runs through the Runner, batched as an executor would batch them. The world's
procedural checker (t2i/data/flowers_check.py: no learned model) reads petal colour, centre colour
and petal count from each image. Reported: the fraction with the asked petal colour, centre colour
and count within one (targets 90 / 85 / 75%), and, from a flowers classifier trained here
(t2i/train/flowers_classifier.py), an Inception-score-like figure, a diversity figure and a Fréchet
distance of its features (FID's formula on our classifier, not on Inception: the figure does not
compare with published FIDs or Inception scores, such as the seed's 3.73), next to the same figures
for real renders of the same scenes. Whether the noise matters: `spread` is the per-pixel standard
deviation among 16 samples of one prompt (one job of 16 samples), `between` the mean absolute
difference between two prompts' images drawn with the same seeds (target: spread at least half of
between). Not a test: figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..data import flowers
from ..data.flowers_check import judge
from ..engine import run_batches
from ..families import build_pipeline
from ..paths import resolve_weights_file
from ..presets import get_preset
from ..spec import make_spec
from ..train.flowers_classifier import diversity, frechet, inception_like, load_classifier

CLASSIFIER = "builtin:flowers/flowers-classifier.pt"
TARGETS = {"colour": 0.90, "centre": 0.85, "petals": 0.75}
SPREAD_PROMPTS = 8   # prompts of 16 samples each for the spread figure
SAMPLES = 16


def flowersbench(preset_name: str = "flowers-gan", n: int = 200, device: str = "cpu", seed: int = 0,
                 batch: int = 16, noise_scale: float | None = None, progress: bool = True) -> dict:
    preset = get_preset(preset_name)
    pipeline = build_pipeline(preset, device=device)
    classifier = load_classifier(resolve_weights_file(CLASSIFIER), hint="python -m t2i train-demo --world flowers")
    real, _, scenes = flowers.sample(n, np.random.default_rng([seed, 19]), "heldout", max_flowers=1)
    captions = [flowers.canonical_caption(s) for s in scenes]
    specs = [_job(preset, c, seed + i, noise_scale=noise_scale) for i, c in enumerate(captions)]
    made = [np.asarray(r.image.convert("RGB")) for r in tqdm(run_batches(specs, pipeline, batch=batch), total=n,
                                                             desc="FlowersBench", disable=not progress)]
    hits = {k: 0 for k in TARGETS}
    for image, scene in zip(made, scenes):
        seen, asked = judge(image), scene.flower
        hits["colour"] += seen["colour"] == asked.colour
        hits["centre"] += seen["centre"] == asked.centre
        hits["petals"] += seen["petals"] is not None and abs(seen["petals"] - asked.petals) <= 1
    images = np.stack(made)
    return {"preset": preset.name, "n": n, "noise_scale": specs[0].options.noise_scale,
            **{k: v / n for k, v in hits.items()},
            "is_like": inception_like(images, classifier), "diversity": diversity(images, classifier),
            "real_is_like": inception_like(real, classifier), "real_diversity": diversity(real, classifier),
            "fid_like": frechet(images, real, classifier),
            **spread(pipeline, preset, seed, noise_scale, batch)}


def _job(preset, caption: str, seed: int, **options):
    """One frame per job: the bench judges the image, not the GIF's walk; no upscaler."""
    return make_spec(caption, preset.name, family=preset.family, defaults=preset.defaults, seed=seed, steps=1,
                     upscale="none", **options)


def spread(pipeline, preset, seed: int, noise_scale, batch: int) -> dict:
    """Jobs of 16 samples for pairs of held-out captions, each pair on one seed: the mean per-pixel
    standard deviation within a job (what the noise changes) and the mean absolute difference between
    the pair's samples (what the prompt changes), images in [0, 1]."""
    captions = [flowers.canonical_caption(s) for s in flowers.heldout_scenes(2 * SPREAD_PROMPTS, seed)]
    specs = [_job(preset, c, seed + i // 2, noise_scale=noise_scale, num_samples=SAMPLES)
             for i, c in enumerate(captions)]
    jobs = [np.stack([np.asarray(s.convert("RGB"), np.float32) / 255 for s in r.samples])
            for r in run_batches(specs, pipeline, batch=max(1, batch // SAMPLES))]
    within = [float(j.std(0).mean()) for j in jobs]
    between = [float(np.abs(a - b).mean()) for a, b in zip(jobs[::2], jobs[1::2])]
    return {"spread": float(np.mean(within)), "between": float(np.mean(between))}


GRID_PROMPT = "this flower has many purple petals with a yellow center"


def grids(out_dir, preset_name: str = "flowers-gan", device: str = "cpu", seed: int = 0) -> list:
    """The README's pictures, through the Runner as a visitor's jobs: 16 samples of one prompt (one
    job, a 4x4 grid) and one sample each of 16 held-out canonical captions (16 jobs, laid out by the
    families' own grid, as a 16-sample job is). Returns the paths written."""
    from pathlib import Path

    from ..families.shared import grid_of

    preset = get_preset(preset_name)
    pipeline = build_pipeline(preset, device=device)
    out = Path(out_dir)
    one = _job(preset, GRID_PROMPT, seed, num_samples=SAMPLES)
    many = [_job(preset, flowers.canonical_caption(s), seed + i)
            for i, s in enumerate(flowers.heldout_scenes(SAMPLES, seed))]
    first, *rest = run_batches([one, *many], pipeline, batch=4)
    sheet = grid_of([r.image for r in rest])
    paths = [out / f"{preset.name}-one-prompt.png", out / f"{preset.name}-16-prompts.png"]
    first.image.save(paths[0])
    sheet.save(paths[1])
    (out / f"{preset.name}-16-prompts.txt").write_text("\n".join(s.prompt for s in many) + "\n")
    return paths


def report(r: dict) -> list[str]:
    met = {k: "met" if r[k] >= t else "missed" for k, t in TARGETS.items()}
    return [f"FlowersBench: preset {r['preset']}, {r['n']} held-out captions (canonical form), one sample each, "
            f"noise scale {r['noise_scale']:g}",
            "| figure | generated | target |",
            "| --- | --- | --- |",
            f"| petal colour as asked | {r['colour']:.1%} | 90% ({met['colour']}) |",
            f"| centre colour as asked | {r['centre']:.1%} | 85% ({met['centre']}) |",
            f"| petal count within one | {r['petals']:.1%} | 75% ({met['petals']}) |",
            f"| IS-like (our flowers classifier, not Inception) | {r['is_like']:.2f} | real renders: {r['real_is_like']:.2f} |",
            f"| diversity (classifier features) | {r['diversity']:.3f} | real renders: {r['real_diversity']:.3f} "
            f"(target {0.9 * r['real_diversity']:.3f}) |",
            f"| FID-like (Fréchet distance of our classifier's features, not Inception's) | {r['fid_like']:.2f} | "
            "0 would be the real renders' statistics |",
            f"| spread of 16 samples of one prompt (per-pixel std) | {r['spread']:.3f} | half the difference "
            f"between two prompts: {r['between'] / 2:.3f} |"]
