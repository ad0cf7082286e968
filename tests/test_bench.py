"""`bench` runs (no timings asserted: figures belong in BENCHMARKS.md, not in tests)."""

import re

import pytest

from t2i.bench.speed import bench
from t2i.bench.reference import ReferenceCutouts


def test_bench_reports_batches_flops_and_the_reference_ratio(tmp_path):
    from PIL import Image

    lines = bench("tiny-vqgan-untrained", device="cpu", steps=2, batches=(1, 2), reference=True,
                  plot=str(tmp_path / "scaling.png"))
    assert Image.open(tmp_path / "scaling.png").size == (640, 400)
    text = "\n".join(lines)
    flops = float(re.search(r"([\d.]+) GFLOP per job-step", text).group(1))
    assert flops > 0
    rows = [line for line in lines if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    assert all(float(row.split("|")[2]) > 0 for row in rows)
    assert re.search(r"reference loop .*: [\d.]+ steps/s", text)
    assert len(re.findall(r"ratio to the reference, \d job\(s\) in batch: [\d.]+x", text)) == 2


def test_reference_cutouts_loop_shapes():
    import torch

    cuts = ReferenceCutouts(32, 6)(torch.rand(1, 3, 64, 80))
    assert cuts.shape == (6, 3, 32, 32) and torch.isfinite(cuts).all()


def test_reference_needs_a_vqgan_preset():
    with pytest.raises(ValueError, match="use a VQGAN preset"):
        bench("tiny-biggan-untrained", device="cpu", steps=1, reference=True)


def test_bench_of_a_diffusion_preset_compares_with_a_one_job_pipeline_loop():
    lines = bench("tiny-diffusion-untrained", device="cpu", steps=2, batches=(1, 4), reference=True)
    text = "\n".join(lines)
    assert "32x32, 4 DDIM steps, CFG 3" in text and float(re.search(r"([\d.]+) GFLOP", text).group(1)) > 0
    rows = [line for line in lines if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "4"]
    assert re.search(r"reference loop \(diffusers-pipeline-style loop.*\): [\d.]+ steps/s", text)
    assert len(re.findall(r"ratio to the reference, \d job\(s\) in batch: [\d.]+x", text)) == 2


@pytest.mark.parametrize("preset, load", [("digits", "32x32, 3 DDPM steps, CFG 8"),
                                          ("shapes-ldm", "64x64, 3 DDIM steps, CFG 5")])
def test_bench_of_a_trained_diffusion_preset_builds_random_weights_of_its_architecture(preset, load):
    """The bench builds random weights of a preset's real architecture: for the presets trained here
    that is the config.json beside the UNet's weights and the trainer's latent projection (both
    failed before: no `config` in the preset, a 32-channel latent for a 4-channel UNet)."""
    lines = bench(preset, device="cpu", steps=1, batches=(1,))
    text = "\n".join(lines)
    assert "random weights of the real architecture" in text and load in text, text
    assert float(re.search(r"([\d.]+) GFLOP", text).group(1)) > 0
