"""ShapesBench: does an image made from a held-out caption show what the caption says?

For N captions of attribute combinations the shapes CLIP never saw in training, generate an image
with a preset and judge it with t2i.data.checker, a procedural analysis that shares nothing with the
guiding CLIP (it is validated at 100% on rendered images by the tests). Reports per-attribute
accuracy (colour, position, size, shape), their mean, and, for the shapes CLIP, its own
text-to-image retrieval and per-attribute zero-shot accuracy on held-out images (what guidance can
at best follow), and, when the preset starts jobs from sketches (t2i/engine/sketch.py), the same
checker's verdict on the sketches alone, so the report shows what guidance added or lost.

The shape is the attribute the presets miss most, so the report also gives a confusion table of the
asked shape against the shape the checker found ("none": no object), and for a sketching preset the
same table for the sketches and how often guidance kept, mended or broke a sketch's shape.

The images are generated in batches (`run_batches`, t2i/engine/runner.py): on two CPU cores 16 jobs at a time take
about a quarter of the time of one after another. A job's image does not depend on its batch-mates
beyond floating-point noise (tests/test_batch.py); over many chaotic steps that noise can still tip
a run, so batched and one-at-a-time figures agree as two runs of the same benchmark do, not bit
for bit.
"""

from __future__ import annotations

from collections import Counter

from tqdm import tqdm

from ..data import checker, shapes
from ..data.checker import ATTRIBUTES
from ..data.shapes import SHAPES
from ..engine import run_batches
from ..families import build_pipeline, family
from ..presets import get_preset
from ..spec import make_spec


def shapesbench(preset_name: str = "shapes", n: int = 100, device: str = "cpu", seed: int = 0,
                iterations: int | None = None, progress: bool = True, batch: int = 16, cache=None) -> dict:
    preset = get_preset(preset_name)
    models = build_pipeline(preset, device=device)
    correct, examples = Counter(), []
    pairs = shapes.heldout_captions(n, seed=seed)
    steps = {family(preset.family).steps_field: iterations}  # None: the preset's
    if cache is not None:
        steps["cache"] = cache  # diffusion presets' step caching (make_spec refuses it for the others)
    specs = [make_spec(caption, preset.name, family=preset.family, seed=seed + i, defaults=preset.defaults, **steps)
             for i, (_, caption) in enumerate(pairs)]
    results = tqdm(run_batches(specs, models, batch), total=len(specs), desc="ShapesBench", disable=not progress)
    asked = [scene.shapes[0].shape for scene, _ in pairs]
    drawn = []
    for (scene, caption), result in zip(pairs, results):
        image = result.image
        judged = checker.judge(image)
        verdict = {k: judged[k] == v for k, v in shapes.attributes(scene.shapes[0]).items()}
        correct.update(a for a in ATTRIBUTES if verdict[a])
        examples.append((caption, image, verdict))
        drawn.append(judged["shape"])
    accuracy = {a: correct[a] / len(pairs) for a in ATTRIBUTES}
    accuracy["mean"] = sum(accuracy[a] for a in ATTRIBUTES) / len(ATTRIBUTES)
    retrieval = clip_attributes = sketch = sketch_drawn = None
    perceptor = preset.components.get("perceptor")  # a guided preset's first CLIP
    if perceptor is not None and perceptor.params.get("model") == "shapes-clip":
        from ..train.clip import attribute_accuracy, retrieval_accuracy

        retrieval = retrieval_accuracy(models.perceptors[0].model)
        clip_attributes = attribute_accuracy(models.perceptors[0].model)
        if models.sketch is not None:
            # The sketches of the same captions, before guidance: how much of the result is the start's.
            sketch, sketch_drawn = _sketches(models, pairs)
    return {"preset": preset.name, "n": len(pairs), "accuracy": accuracy, "clip_retrieval": retrieval,
            "clip_attributes": clip_attributes, "sketch": sketch, "examples": examples,
            "confusion": confusion(asked, drawn), "asked": asked, "drawn": drawn, "sketch_drawn": sketch_drawn,
            "sketch_confusion": None if sketch_drawn is None else confusion(asked, sketch_drawn)}


def _sketches(models, pairs) -> tuple[dict[str, float], list[str]]:
    """Per attribute, how often the checker finds the caption in the job's starting sketch (drawn the
    way a job draws it: the first perceptor's text embedding of the caption), and each sketch's shape."""
    from ..engine.sketch import sketch_image

    right, drawn = Counter(), []
    for scene, caption in pairs:
        judged = checker.judge(sketch_image(models.sketch, models.perceptors[0].encode_text([caption]), [1.0]))
        right.update(k for k, v in shapes.attributes(scene.shapes[0]).items() if judged[k] == v)
        drawn.append(judged["shape"])
    return {a: right[a] / len(pairs) for a in ATTRIBUTES}, drawn


def confusion(asked: list[str], drawn: list[str]) -> dict[str, dict[str, int]]:
    """{asked shape: {drawn shape or "none": count}}: every shape a row, every row every column."""
    table = {a: dict.fromkeys((*SHAPES, "none"), 0) for a in SHAPES}
    for a, d in zip(asked, drawn, strict=True):
        table[a][d] += 1
    return table


def confusion_lines(table: dict[str, dict[str, int]]) -> list[str]:
    columns = list(next(iter(table.values())))
    return (["| asked \\ drawn | " + " | ".join(columns) + " | right |", "| --- " * (len(columns) + 2) + "|"]
            + [f"| {a} | " + " | ".join(str(row[c]) for c in columns)
               + f" | {row[a]}/{sum(row.values())} |" for a, row in table.items()])


def report(result: dict) -> list[str]:
    acc = result["accuracy"]
    lines = [f"ShapesBench: preset {result['preset']}, {result['n']} held-out captions",
             "| colour | position | size | shape | mean |", "| --- | --- | --- | --- | --- |",
             "| " + " | ".join(f"{acc[a]:.0%}" for a in (*ATTRIBUTES, "mean")) + " |"]
    if result["clip_retrieval"] is not None:
        lines.append(f"shapes CLIP text-to-image retrieval on held-out images: {result['clip_retrieval']:.0%}")
        lines.append("shapes CLIP zero-shot attributes on held-out images: "
                     + ", ".join(f"{k} {v:.0%}" for k, v in result["clip_attributes"].items()))
    lines += ["shape confusion (rows: the asked shape; columns: what the checker found):",
              *confusion_lines(result["confusion"])]
    if result.get("sketch") is not None:
        lines.append("the starting sketches alone (before guidance), judged the same way: "
                     + ", ".join(f"{k} {v:.0%}" for k, v in result["sketch"].items()))
        lines += ["the sketches' shape confusion:", *confusion_lines(result["sketch_confusion"])]
        lines.append(_kept(result["asked"], result["sketch_drawn"], result["drawn"]))
    return lines


def _kept(asked: list[str], sketched: list[str], drawn: list[str]) -> str:
    """How guidance changed the sketches' shapes, caption by caption."""
    pairs = Counter((s == a, d == a) for a, s, d in zip(asked, sketched, drawn, strict=True))
    return (f"shape, sketch -> result: right -> right {pairs[True, True]}, right -> wrong {pairs[True, False]}, "
            f"wrong -> right {pairs[False, True]}, wrong -> wrong {pairs[False, False]}")


SHEET = 16  # the README's example sheet: the first 16 of a run's captions, in a 4x4 grid


def write_sheet(result: dict, path) -> list:
    """The first 16 images of a ShapesBench run laid out by the families' own grid (as a 16-sample job
    is), and beside it (same name, .txt) their captions with the checker's verdict: the README's
    example images, the benchmark's own jobs. Returns the paths written."""
    from pathlib import Path

    from ..families.shared import grid_of

    examples = result["examples"][:SHEET]
    path = Path(path)
    grid_of([image for _, image, _ in examples]).save(path)
    lines = [f"{caption}  ({'right' if all(verdict.values()) else 'wrong: ' + ', '.join(a for a, ok in verdict.items() if not ok)})"
             for caption, _, verdict in examples]
    text = path.with_suffix(".txt")
    text.write_text("\n".join(lines) + "\n")
    return [path, text]
