"""t2i: CLIP-guided text-to-image generation (VQGAN / BigGAN steered by open_clip)."""

__version__ = "0.1.0"
