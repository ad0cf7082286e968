"""The flowers world wired end to end, with a few steps of each trainer (the full run is train-demo's):
train-demo --world flowers writes every file, the flowers-gan preset and the flowers SRCNN upscalers
load them through the real loaders, and FlowersBench judges the preset's images with the checker."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = ("flowers-text.pt", "generator.pt", "srcnn_x2.pth", "srcnn_x3.pth", "srcnn_x4.pth", "flowers-classifier.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    builtin = tmp_path_factory.mktemp("builtin")
    run = subprocess.run([sys.executable, "-m", "t2i", "train-demo", "--world", "flowers", "--clip-steps", "3",
                          "--gan-steps", "50", "--srcnn-steps", "2", "--classifier-steps", "3", "--quiet"],
                         cwd=ROOT, env={**__import__("os").environ, "T2I_BUILTIN": str(builtin)},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    return builtin, run.stdout


def test_train_demo_writes_and_proves_every_file(world):
    builtin, out = world
    assert all((builtin / "flowers" / f).is_file() for f in FILES)
    assert "(loaded back: ok)" in out
    # The GAN's training state stays beside them (resumable) and git ignores it.
    assert (builtin / "flowers" / "gan" / "checkpoint.pt").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", "checkpoints/flowers/gan/checkpoint.pt"], cwd=ROOT)
    assert ignored.returncode == 0


def test_flowersbench_judges_the_presets_images(world, monkeypatch):
    builtin, _ = world
    monkeypatch.setenv("T2I_BUILTIN", str(builtin))
    from t2i.bench.flowers import flowersbench, report

    result = flowersbench(n=6, batch=3, progress=False)
    assert result["n"] == 6 and all(0 <= result[k] <= 1 for k in ("colour", "centre", "petals"))
    assert result["real_is_like"] >= 1.0 and result["is_like"] >= 1.0 - 1e-6
    lines = report(result)
    assert "not Inception" in lines[6] and ("met" in lines[3] or "missed" in lines[3])
    assert 0 <= result["spread"] < 1 and 0 < result["between"] < 1 and result["fid_like"] >= 0
    assert any(line.startswith("| spread of 16 samples") for line in lines)


def test_the_frechet_figure_is_zero_for_the_same_images_and_grows_for_noise(world):
    import numpy as np
    import torch

    from t2i.data import flowers
    from t2i.train.flowers_classifier import frechet, load_classifier

    builtin, _ = world
    classifier = load_classifier(builtin / "flowers" / "flowers-classifier.pt")
    real = flowers.sample(40, np.random.default_rng(0), "heldout")[0]
    noise = torch.rand(40, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert abs(frechet(real, real, classifier)) < 1e-3 < frechet(noise, real, classifier)


def test_the_readme_grids_come_from_jobs_of_the_preset(world, monkeypatch, tmp_path):
    builtin, _ = world
    monkeypatch.setenv("T2I_BUILTIN", str(builtin))
    from PIL import Image

    from t2i.bench.flowers import grids

    one, many = grids(tmp_path)
    assert Image.open(one).size == (4 * 64 + 5 * 2, 4 * 64 + 5 * 2)  # a 16-sample job's grid
    assert Image.open(many).size == (4 * 64 + 5 * 2, 4 * 64 + 5 * 2)  # the same layout for 16 jobs
    assert len((tmp_path / "flowers-gan-16-prompts.txt").read_text().splitlines()) == 16


def test_the_flowers_srcnn_upscalers_are_offered(world, monkeypatch):
    builtin, _ = world
    monkeypatch.setenv("T2I_BUILTIN", str(builtin))
    from PIL import Image

    from t2i import upscale

    assert {"flowers-srcnn-x2", "flowers-srcnn-x3", "flowers-srcnn-x4"} <= set(upscale.names())
    up = upscale.build("flowers-srcnn-x3")
    assert up.scale == 3 and up(Image.new("RGB", (20, 16), (200, 40, 90))).size == (60, 48)


def test_gan_steps_must_fill_whole_epochs(tmp_path):
    run = subprocess.run([sys.executable, "-m", "t2i", "train-demo", "--world", "flowers", "--gan-steps", "70",
                          "--clip-steps", "1", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "T2I_BUILTIN": str(tmp_path)})
    # Refused before anything trains, in one line.
    assert run.returncode == 2 and "multiple of 50" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "flowers").exists()


def test_a_seed_layout_hdf5_file_trains_the_gan(tmp_path):
    """The flowers world exported to the seed's HDF5 layout (with embeddings) trains through the same
    trainer as a converted flowers.hd5 would: python -m t2i.train.gan --data FILE."""
    from t2i.data import hdf5
    from t2i.families.gan.components import RandomText
    from t2i.train.gan import main

    path = tmp_path / "flowers.hd5"
    hdf5.export_world(path, {"train": 6}, text_encoder=lambda caps: RandomText(32).encode(caps).numpy())
    out = tmp_path / "run"
    assert main(["--data", str(path), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "4", "--ngf", "8", "--ndf", "8"]) == 0
    assert (out / "generator.pt").is_file() and (out / "samples" / "epoch-001.png").is_file()
    with pytest.raises(Exception) as e:
        main(["--data", str(tmp_path / "absent.hd5"), "--out", str(tmp_path / "x"), "--epochs", "1"])
    assert "absent.hd5" in str(e.value) and "\n" not in str(e.value)
