"""How weights trained here are written: floating-point tensors in fp16 (a leaf module, imported by
the trainers and the model modules alike, so that weights.py and the engine need not import each other)."""


def fp16_state_dict(module) -> dict:
    """The module's state with floating-point tensors in fp16: how the built-in (committed) weights are
    written, at half the size; every loader casts them back to the model's fp32."""
    return {k: v.half() if v.is_floating_point() else v for k, v in module.state_dict().items()}
