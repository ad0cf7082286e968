"""Shared fixtures: tiny models built from the repository's untrained presets (real classes)."""

import os

import pytest
import torch

# Tests run on 2-core machines; one intra-op thread keeps CPU runs repeatable and avoids
# oversubscription when several test processes run at once.
torch.set_num_threads(1)
os.environ.setdefault("T2I_CHECKPOINTS", os.path.join(os.path.dirname(__file__), "_no_checkpoints"))


@pytest.fixture(scope="session")
def tiny_models():
    from t2i.engine import build_models
    from t2i.presets import get_preset

    return build_models(get_preset("tiny-vqgan-untrained"), device="cpu")
