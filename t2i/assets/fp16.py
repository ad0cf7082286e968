"""How weights trained here are written: floating-point tensors in fp16 (a leaf module, imported by
the trainers and the model modules alike, so that weights.py and the engine need not import each other)."""


def fp16_state_dict(module) -> dict:
    """The module's state with floating-point tensors in fp16: how the built-in (committed) weights are
    written, at half the size; every loader casts them back to the model's fp32."""
    return {k: v.half() if v.is_floating_point() else v for k, v in module.state_dict().items()}


def save_checkpoint(module, path) -> None:
    """{"config": module.config, "state_dict": fp16} written through a temporary name, so a reader (or
    an interrupted run) never leaves half a file; the format of the small models trained here."""
    import os
    from pathlib import Path

    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"config": module.config, "state_dict": fp16_state_dict(module)}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
