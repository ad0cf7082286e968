"""Where the shapes presets lose the shape (issue 29): one measurement per part of the pipeline.

    python scripts/shapes_diagnosis.py clip      # the shapes CLIP's zero-shot shape on renders
    python scripts/shapes_diagnosis.py vqgan     # the VQGAN's reconstructions, judged by the checker
    python scripts/shapes_diagnosis.py start     # a job's start: the sketch, and the VQGAN's encoding of it (step 0)
    python scripts/shapes_diagnosis.py cutouts   # CLIP's shape on the preset's cutouts against the plain render
    python scripts/shapes_diagnosis.py tokens    # do the text states (shapes-ldm's tokens, the pooled embedding) separate the shapes?
    python scripts/shapes_diagnosis.py oracle    # the shapes preset started from the caption's true render

Every figure is over the held-out attribute combinations (`t2i.train.clip.heldout_scenes`: each on
every background, no jitter) unless said otherwise; shape accuracy is three-way. "image -> text": the
render's canonical caption against the same caption with the shape word changed (what
`attribute_accuracy` reports); "text -> image": the caption against the renders of the same scene
with the shape changed, the direction guidance climbs (it moves an image towards a text); the
candidates are always the clean renders. "margin": the right caption's cosine minus the best wrong
one's, averaged.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t2i.bench.shapes import confusion, confusion_lines  # noqa: E402
from t2i.data import checker, shapes  # noqa: E402
from t2i.data.shapes import SHAPES  # noqa: E402
from t2i.families import build_pipeline  # noqa: E402
from t2i.presets import get_preset  # noqa: E402

torch.set_num_threads(1)


def _with_shape(scene: shapes.Scene, shape: str) -> shapes.Scene:
    return dataclasses.replace(scene, shapes=(dataclasses.replace(scene.shapes[0], shape=shape),))


def _tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float().div(255)


def _scenes(split: str = "heldout") -> list[shapes.Scene]:
    from t2i.train.clip import heldout_scenes

    if split == "heldout":
        return heldout_scenes()
    rng = __import__("random").Random(0)
    return [shapes.Scene((shapes.Shape(*rng.choice(shapes.COMBOS["train"])),), rng.choice(tuple(shapes.BACKGROUNDS)))
            for _ in range(len(heldout_scenes()))]


def _pipeline():
    return build_pipeline(get_preset("shapes"), device="cpu")


@torch.no_grad()
def clip_shape(perceptor, scenes, images: torch.Tensor) -> tuple[float, dict, float, float]:
    """(image -> text accuracy, its confusion, text -> image accuracy, mean margin of the right caption's
    cosine over the best wrong one) of images (n, 3, 64, 64) showing `scenes`."""
    feats = perceptor.encode_image(images)
    texts = perceptor.encode_text([shapes.canonical_caption(_with_shape(s, v)) for s in scenes for v in SHAPES])
    texts = texts.view(len(scenes), len(SHAPES), -1)
    sims = torch.einsum("nd,nkd->nk", feats, texts)
    asked = [s.shapes[0].shape for s in scenes]
    truth = torch.tensor([SHAPES.index(a) for a in asked])
    picked = sims.argmax(1)
    right = sims[torch.arange(len(scenes)), truth]
    wrong = sims.masked_fill(torch.nn.functional.one_hot(truth, len(SHAPES)).bool(), -9).max(1).values
    # text -> image: the caption's own render among the renders of the scene in every shape
    renders = _tensor([shapes.render(_with_shape(s, v)) for s in scenes for v in SHAPES])
    rfeats = perceptor.encode_image(renders).view(len(scenes), len(SHAPES), -1)
    own = texts[torch.arange(len(scenes)), truth]
    t2i = torch.einsum("nd,nkd->nk", own, rfeats).argmax(1)
    return (float((picked == truth).float().mean()), confusion(asked, [SHAPES[i] for i in picked]),
            float((t2i == truth).float().mean()), float((right - wrong).mean()))


def _clip_lines(name, perceptor, scenes, images) -> list[str]:
    acc, table, t2i, margin = clip_shape(perceptor, scenes, images)
    return [f"{name}: image -> text {acc:.0%}, text -> image {t2i:.0%}, margin {margin:+.3f} (n={len(scenes)})",
            *confusion_lines(table)]


def cmd_clip(_) -> None:
    p = _pipeline().perceptors[0]
    for split in ("heldout", "train"):
        scenes = _scenes(split)
        print("\n".join(_clip_lines(f"shapes CLIP on {split} renders", p, scenes,
                                    _tensor([shapes.render(s) for s in scenes]))))


@torch.no_grad()
def _reconstruct(generator, images: torch.Tensor) -> torch.Tensor:
    """Encode (the encoder already picks the nearest codes: a job's start is quantised) and decode."""
    model = generator.model
    return model.decode(model.encode_latent(images * 2 - 1)).add(1).div(2).clamp(0, 1)


def _judge_lines(name: str, scenes, images: torch.Tensor) -> list[str]:
    from torchvision.transforms.functional import to_pil_image

    judged = [checker.judge(to_pil_image(im)) for im in images]
    right = Counter(k for s, j in zip(scenes, judged) for k, v in shapes.attributes(s.shapes[0]).items() if j[k] == v)
    return [f"{name}, judged by the checker: " + ", ".join(f"{a} {right[a] / len(scenes):.0%}" for a in checker.ATTRIBUTES)
            + f" (n={len(scenes)})", *confusion_lines(confusion([s.shapes[0].shape for s in scenes],
                                                                 [j["shape"] for j in judged]))]


def cmd_vqgan(_) -> None:
    pipe = _pipeline()
    for split in ("heldout", "train"):
        scenes = _scenes(split)
        x = _tensor([shapes.render(s) for s in scenes])
        print("\n".join(_judge_lines(f"{split} renders themselves", scenes, x)))
        rec = _reconstruct(pipe.generator, x)
        print("\n".join(_judge_lines(f"{split} renders through the VQGAN", scenes, rec)))
        print("\n".join(_clip_lines("  CLIP on them", pipe.perceptors[0], scenes, rec)))


def _bench_scenes(n: int, seed: int) -> list[tuple[shapes.Scene, str]]:
    return shapes.heldout_captions(n, seed=seed)


@torch.no_grad()
def cmd_start(args) -> None:
    from torchvision.transforms.functional import to_tensor

    from t2i.engine.sketch import sketch_image

    pipe = _pipeline()
    pairs = (_bench_scenes(args.n, args.seed) if args.split == "heldout"
             else [(s, shapes.canonical_caption(s)) for s in _scenes("train")])
    scenes = [s for s, _ in pairs]
    sketches = [sketch_image(pipe.sketch, pipe.perceptors[0].encode_text([c]), [1.0]) for _, c in pairs]
    x = torch.stack([to_tensor(im) for im in sketches])
    print("\n".join(_judge_lines(f"the sketches ({args.split} captions)", scenes, x)))
    print("\n".join(_clip_lines("  CLIP on the sketches", pipe.perceptors[0], scenes, x)))
    rec = _reconstruct(pipe.generator, x)
    print("\n".join(_judge_lines("the sketches encoded by the VQGAN (a job's step 0)", scenes, rec)))
    print("\n".join(_clip_lines("  CLIP on them", pipe.perceptors[0], scenes, rec)))


def _cutout_config(pipe, **change):
    from t2i.engine.cutouts import CutoutConfig
    from t2i.families.guided.preset import parts

    settings = {**parts(pipe.preset).cutouts, **change}
    return CutoutConfig(cut_size=pipe.perceptors[0].input_size, cutn=16, **settings)


@torch.no_grad()
def cmd_cutouts(_) -> None:
    from t2i.engine.cutouts import make_cutouts_batch

    pipe = _pipeline()
    p = pipe.perceptors[0]
    scenes = _scenes()
    x = _tensor([shapes.render(s) for s in scenes])
    print("\n".join(_clip_lines("plain renders", p, scenes, x)))
    base = tuple(parts_augments(pipe))
    variants = {"the preset's cutouts " + "+".join(base): {},
                "crops only (no augmentation)": {"augments": ()},
                **{f"crops + {a} only": {"augments": (a,)} for a in base},
                "crops min_scale 1.0 (whole image) + the preset's augments": {"min_scale": 1.0}}
    for name, change in variants.items():
        cfg = _cutout_config(pipe, **change)
        gens = [torch.Generator().manual_seed(i) for i in range(len(scenes))]
        cuts = make_cutouts_batch(x, cfg, gens)  # (n * cutn, 3, S, S)
        cut_scenes = [s for s in scenes for _ in range(cfg.cutn)]
        acc, _, _, margin = clip_shape(p, cut_scenes, cuts)
        # What the loss sees: the mean of a job's cutout embeddings.
        mean = torch.nn.functional.normalize(p.encode_image(cuts).view(len(scenes), cfg.cutn, -1).mean(1), dim=-1)
        texts = p.encode_text([shapes.canonical_caption(_with_shape(s, v)) for s in scenes for v in SHAPES])
        pooled = torch.einsum("nd,nkd->nk", mean, texts.view(len(scenes), len(SHAPES), -1)).argmax(1)
        truth = torch.tensor([SHAPES.index(s.shapes[0].shape) for s in scenes])
        judged = Counter(checker.judge(_pil(c))["shape"] == s.shapes[0].shape for c, s in zip(cuts, cut_scenes))
        print(f"{name}: CLIP per cutout image -> text {acc:.1%} (margin {margin:+.3f}), on the mean of 16 cutouts "
              f"{float((pooled == truth).float().mean()):.1%}; checker's shape per cutout {judged[True] / len(cuts):.1%}")


def parts_augments(pipe):
    from t2i.families.guided.preset import parts

    return parts(pipe.preset).cutouts.get("augments", ())


def _pil(t: torch.Tensor):
    from torchvision.transforms.functional import to_pil_image

    return to_pil_image(t)


@torch.no_grad()
def cmd_tokens(_) -> None:
    from t2i.families import build_pipeline as build

    pipe = build(get_preset("shapes-ldm"), device="cpu")
    text = pipe.text
    rng = __import__("random").Random(0)
    train = [shapes.Scene((shapes.Shape(*rng.choice(shapes.COMBOS["train"])),), rng.choice(tuple(shapes.BACKGROUNDS)))
             for _ in range(600)]
    test = _scenes()

    def features(scenes, caption=shapes.canonical_caption):
        captions = [caption(s) for s in scenes]
        tokens = text.tokens(captions)
        states = text.encode_tokens(tokens)
        word = [text.tokenizer([s.shapes[0].shape])[0, 1] for s in scenes]  # the shape word's token id
        at_word = torch.stack([st[(tk == w).nonzero()[0, 0]] for st, tk, w in zip(states, tokens, word)])
        mask = (tokens != 0).float()[..., None]
        mean = (states * mask).sum(1) / mask.sum(1)
        pooled = torch.nn.functional.normalize(text.model.encode_text(tokens).float(), dim=-1)
        return {"the shape word's own state": at_word, "mean over the caption's tokens": mean,
                "every token's state (flattened)": states.flatten(1),
                "the pooled, normalised embedding (the sketch net's input, guidance's target)": pooled}

    def probe(xtr, ytr, xte, yte):
        centroids = torch.stack([xtr[ytr == k].mean(0) for k in range(len(SHAPES))])
        nearest = float(((torch.cdist(xte, centroids).argmin(1)) == yte).float().mean())
        w = torch.zeros(xtr.shape[1], len(SHAPES), requires_grad=True)
        b = torch.zeros(len(SHAPES), requires_grad=True)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        opt = torch.optim.Adam([w, b], lr=0.01)
        for _ in range(300):
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(((xtr - mu) / sd) @ w + b, ytr) + 1e-3 * w.pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        linear = float(((((xte - mu) / sd) @ w + b).argmax(1) == yte).float().mean())
        return nearest, linear

    ytr = torch.tensor([SHAPES.index(s.shapes[0].shape) for s in train])
    yte = torch.tensor([SHAPES.index(s.shapes[0].shape) for s in test])
    ftr, fte = features(train), features(test)
    for name in ftr:
        nearest, linear = probe(ftr[name], ytr, fte[name], yte)
        print(f"shapes CLIP text, {name}: nearest centroid {nearest:.0%}, linear probe {linear:.0%} "
              f"(fit on {len(train)} train captions, judged on {len(test)} held-out)")
    # How far the cross-attention input moves when one word changes, relative to the caption's states.
    states = text.encode(shapes.canonical_caption(s) for s in test)
    for attribute, values in (("shape", SHAPES), ("colour", tuple(shapes.COLOURS)), ("size", shapes.SIZES)):
        other = [dataclasses.replace(s, shapes=(dataclasses.replace(
            s.shapes[0], **{attribute: next(v for v in values if v != getattr(s.shapes[0], attribute))}),)) for s in test]
        moved = text.encode([shapes.canonical_caption(s) for s in other])
        change = ((moved - states).norm(dim=(1, 2)) / states.norm(dim=(1, 2))).mean()
        print(f"  changing the {attribute} word moves the token states by {float(change):.1%} of their norm")


def cmd_oracle(args) -> None:
    """The preset at its defaults, each job started from its caption's own render instead of the sketch:
    what guidance does to a start of the right shape."""
    import io

    from t2i.engine import run_batches
    from t2i.spec import make_spec

    preset = get_preset("shapes")
    pipe = build_pipeline(preset, device="cpu")
    pairs = _bench_scenes(args.n, args.seed)
    specs = []
    for i, (scene, caption) in enumerate(pairs):
        buf = io.BytesIO()
        shapes.render(scene).save(buf, format="PNG")
        specs.append(make_spec(caption, preset.name, family=preset.family, seed=args.seed + i,
                               defaults=preset.defaults, init_image=buf.getvalue()))
    results = list(run_batches(specs, pipe, 16))
    from torchvision.transforms.functional import to_tensor

    print("\n".join(_judge_lines("the preset started from the true render", [s for s, _ in pairs],
                                 torch.stack([to_tensor(r.image) for r in results]))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("clip", "vqgan", "start", "cutouts", "tokens", "oracle"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("heldout", "train"), default="heldout",
                    help="start: ShapesBench's held-out captions, or train combinations' captions")
    args = ap.parse_args()
    globals()[f"cmd_{args.what}"](args)


if __name__ == "__main__":
    main()
