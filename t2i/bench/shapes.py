"""ShapesBench: does an image made from a held-out caption show what the caption says?

For N captions of attribute combinations the shapes CLIP never saw in training, generate an image
with a preset and judge it with t2i.data.checker, a procedural analysis that shares nothing with the
guiding CLIP (it is validated at 100% on rendered images by the tests). Reports per-attribute
accuracy (colour, position, size, shape), their mean, and, for the shapes CLIP, its own
text-to-image retrieval and per-attribute zero-shot accuracy on held-out images (what guidance can
at best follow), and, when the preset starts jobs from sketches (t2i/engine/sketch.py), the same
checker's verdict on the sketches alone, so the report shows what guidance added or lost.

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
from ..engine import run_batches
from ..families import build_pipeline, family
from ..presets import get_preset
from ..spec import make_spec


def shapesbench(preset_name: str = "shapes", n: int = 100, device: str = "cpu", seed: int = 0,
                iterations: int | None = None, progress: bool = True, batch: int = 16) -> dict:
    preset = get_preset(preset_name)
    models = build_pipeline(preset, device=device)
    correct, examples = Counter(), []
    pairs = shapes.heldout_captions(n, seed=seed)
    steps = {family(preset.family).steps_field: iterations}  # None: the preset's
    specs = [make_spec(caption, preset.name, family=preset.family, seed=seed + i, defaults=preset.defaults, **steps)
             for i, (_, caption) in enumerate(pairs)]
    results = tqdm(run_batches(specs, models, batch), total=len(specs), desc="ShapesBench", disable=not progress)
    for (scene, caption), result in zip(pairs, results):
        image = result.image
        verdict = checker.score(image, scene.shapes[0])
        correct.update(a for a in ATTRIBUTES if verdict[a])
        examples.append((caption, image, verdict))
    accuracy = {a: correct[a] / len(pairs) for a in ATTRIBUTES}
    accuracy["mean"] = sum(accuracy[a] for a in ATTRIBUTES) / len(ATTRIBUTES)
    retrieval = clip_attributes = sketch = None
    perceptor = preset.components.get("perceptor")  # a guided preset's first CLIP
    if perceptor is not None and perceptor.params.get("model") == "shapes-clip":
        from ..train.clip import attribute_accuracy, retrieval_accuracy

        retrieval = retrieval_accuracy(models.perceptors[0].model)
        clip_attributes = attribute_accuracy(models.perceptors[0].model)
        if models.sketch is not None:
            from ..train.sketch import heldout_accuracy

            # The sketches of the same captions, before guidance: how much of the result is the start's.
            sketch = heldout_accuracy(models.sketch, models.perceptors[0].model, n=len(pairs), seed=seed)
    return {"preset": preset.name, "n": len(pairs), "accuracy": accuracy, "clip_retrieval": retrieval,
            "clip_attributes": clip_attributes, "sketch": sketch, "examples": examples}


def report(result: dict) -> list[str]:
    acc = result["accuracy"]
    lines = [f"ShapesBench: preset {result['preset']}, {result['n']} held-out captions",
             "| colour | position | size | shape | mean |", "| --- | --- | --- | --- | --- |",
             "| " + " | ".join(f"{acc[a]:.0%}" for a in (*ATTRIBUTES, "mean")) + " |"]
    if result["clip_retrieval"] is not None:
        lines.append(f"shapes CLIP text-to-image retrieval on held-out images: {result['clip_retrieval']:.0%}")
        lines.append("shapes CLIP zero-shot attributes on held-out images: "
                     + ", ".join(f"{k} {v:.0%}" for k, v in result["clip_attributes"].items()))
    if result.get("sketch") is not None:
        lines.append("the starting sketches alone (before guidance), judged the same way: "
                     + ", ".join(f"{k} {v:.0%}" for k, v in result["sketch"].items()))
    return lines
