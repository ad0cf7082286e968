"""The generation engine's shared parts: a library that knows nothing of queues or pages.

    pipeline = build_pipeline(get_preset(name), device)     (t2i/families: one pipeline per family)
    generation = run(spec, pipeline, on_step)               (runner.py: one job, or many as a batch)

runner.py (slots, join/leave, frames, autocast), and the building blocks the families use:
perceptor.py (open_clip), vqgan.py / biggan.py (generators), cutouts.py (batched augmentations),
prompts.py (targets and loss), sketch.py (a prompt's starting picture).
"""

from .runner import Generation, Runner, Step, run, run_batches

__all__ = ["Generation", "Runner", "Step", "run", "run_batches"]
