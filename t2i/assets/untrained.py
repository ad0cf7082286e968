"""Untrained presets are built under one fixed seed, so every process builds the same random model."""

UNTRAINED_SEED = 0
