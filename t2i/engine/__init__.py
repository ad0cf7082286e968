"""The generation engine: a library that knows nothing of queues or pages.

    models = build_models(get_preset(name), device)
    result = run(spec, models, on_step)

perceptor.py (open_clip), vqgan.py / biggan.py (generators), cutouts.py (batched augmentations),
prompts.py (targets and loss), loop.py (the optimisation), models.py (building them from a preset).
"""

from .loop import Result, Step, run, run_batches
from .models import Models, build_models

__all__ = ["Models", "Result", "Step", "build_models", "run", "run_batches"]
