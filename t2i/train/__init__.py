"""Training the built-in offline model set (the shapes world's CLIP and VQGAN) on the CPU."""
