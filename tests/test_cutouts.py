"""Batched cutouts: shapes, range, determinism, per-cutout variety, geometry, one grid_sample."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from t2i.engine import cutouts as cutouts_mod
from t2i.engine.cutouts import AUGMENTS, CutoutConfig, make_cutouts, sampling_grids

DEVICE = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def random_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((1, 3, h, w), generator=gen(seed), device=DEVICE)


def structured_image(size: int = 64) -> torch.Tensor:
    """Checkerboard plus a horizontal gradient in red and a coloured square off-centre."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = (((ys // 8) + (xs // 8)) % 2).float()
    img = torch.stack([xs.float() / (size - 1), checker, 1 - checker], dim=0)
    img[:, size // 8: size // 3, size // 2: size // 2 + size // 4] = torch.tensor([1.0, 0.2, 0.0])[:, None, None]
    return img[None].to(DEVICE)


AUG_SETS = [(), ("flip",), ("affine",), ("perspective",), ("colour",), ("noise",), AUGMENTS]


# --- shapes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(64, 64), (48, 80), (300, 300), (200, 260)])
@pytest.mark.parametrize("cut_size,cutn", [(32, 8), (48, 5)])
def test_shapes(h, w, cut_size, cutn):
    out = make_cutouts(random_image(h, w), CutoutConfig(cut_size=cut_size, cutn=cutn), gen())
    assert out.shape == (cutn, 3, cut_size, cut_size)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("h,w", [(64, 64), (48, 80), (300, 300)])
def test_shapes_clip_size(h, w):
    out = make_cutouts(random_image(h, w), CutoutConfig(cut_size=224, cutn=2), gen())
    assert out.shape == (2, 3, 224, 224)


def test_large_image_takes_area_downsample_path(monkeypatch):
    calls = []
    real = F.interpolate

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs.get("mode"), tuple(out.shape)))
        return out

    monkeypatch.setattr(cutouts_mod.F, "interpolate", counting)
    cfg = CutoutConfig(cut_size=32, cutn=4)
    out = make_cutouts(random_image(200, 260), cfg, gen())
    assert out.shape == (4, 3, 32, 32)
    assert len(calls) == 1
    mode, shape = calls[0]
    assert mode == "area"
    assert min(shape[-2:]) == 64  # shorter side brought down to 2 * cut_size

    calls.clear()
    make_cutouts(random_image(64, 64), cfg, gen())  # exactly 2 * cut_size: no downsample
    assert calls == []


def test_sampling_grids_shape():
    cfg = CutoutConfig(cut_size=16, cutn=7)
    grids = sampling_grids(cfg, 48, 80, gen(), DEVICE)
    assert grids.shape == (7, 16, 16, 2)
    assert torch.isfinite(grids).all()


# --- value range --------------------------------------------------------------------------------

@pytest.mark.parametrize("augments", AUG_SETS, ids=lambda a: "+".join(a) or "none")
def test_values_in_unit_range(augments):
    img = random_image(64, 64)
    img[..., :16, :] = 0.0
    img[..., -16:, :] = 1.0
    cfg = CutoutConfig(cut_size=32, cutn=16, augments=augments, colour=0.5, noise=0.5)
    out = make_cutouts(img, cfg, gen(3))
    assert out.min() >= 0.0
    assert out.max() <= 1.0


# --- determinism --------------------------------------------------------------------------------

def test_same_seed_same_cutouts_different_seed_differs():
    img = structured_image()
    cfg = CutoutConfig(cut_size=32, cutn=8)
    a = make_cutouts(img, cfg, gen(123))
    b = make_cutouts(img, cfg, gen(123))
    c = make_cutouts(img, cfg, gen(124))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# --- per-cutout variety -------------------------------------------------------------------------

def _assert_pairwise_different(out: torch.Tensor, tol: float = 1e-3):
    for i, j in itertools.combinations(range(out.shape[0]), 2):
        diff = (out[i] - out[j]).abs().max().item()
        assert diff > tol, f"cutouts {i} and {j} are identical (max diff {diff})"


def test_cutouts_pairwise_different_full_augments():
    out = make_cutouts(structured_image(), CutoutConfig(cut_size=32, cutn=16), gen(1))
    _assert_pairwise_different(out)


def test_cutouts_pairwise_different_without_augments():
    out = make_cutouts(structured_image(), CutoutConfig(cut_size=32, cutn=16, augments=()), gen(1))
    _assert_pairwise_different(out)


# --- geometry -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [16, 33, 64])
def test_identity_cutout_reproduces_image(size):
    img = random_image(size, size, seed=size)
    cfg = CutoutConfig(cut_size=size, cutn=3, min_scale=1.0, augments=())
    out = make_cutouts(img, cfg, gen(5))
    assert out.shape == (3, 3, size, size)
    for k in range(3):
        torch.testing.assert_close(out[k], img[0], atol=1e-5, rtol=0)


def test_flip_really_flips():
    size = 32
    img = torch.zeros((1, 3, size, size), device=DEVICE)
    img[..., size // 2:] = 1.0
    mirror = img.flip(-1)
    cfg = CutoutConfig(cut_size=size, cutn=32, min_scale=1.0, augments=("flip",))
    out = make_cutouts(img, cfg, gen(0))
    same = flipped = 0
    for k in range(out.shape[0]):
        if torch.allclose(out[k], img[0], atol=1e-5):
            same += 1
        elif torch.allclose(out[k], mirror[0], atol=1e-5):
            flipped += 1
        else:
            pytest.fail(f"cutout {k} is neither the image nor its mirror")
    assert same > 0 and flipped > 0
    assert same + flipped == 32


# --- batching -----------------------------------------------------------------------------------

def test_single_grid_sample_call(monkeypatch):
    calls = []
    real = F.grid_sample

    def counting(input, grid, *args, **kwargs):
        calls.append((tuple(input.shape), tuple(grid.shape)))
        return real(input, grid, *args, **kwargs)

    monkeypatch.setattr(cutouts_mod.F, "grid_sample", counting)
    out = make_cutouts(random_image(96, 96), CutoutConfig(cut_size=32, cutn=64), gen())
    assert out.shape == (64, 3, 32, 32)
    assert len(calls) == 1
    # The image is sampled in place (batch 1, never copied per cutout); the 64 grids are stacked.
    assert calls[0][0] == (1, 3, 64, 64) and calls[0][1] == (1, 64 * 32, 32, 2)  # area-downsampled to 2x S


def test_a_batch_of_images_takes_one_grid_sample_and_matches_single_images(monkeypatch):
    from t2i.engine.cutouts import make_cutouts_batch

    images = torch.stack([random_image(80, 80, seed=s)[0] for s in range(3)])
    cfg = CutoutConfig(cut_size=32, cutn=16)
    singles = [make_cutouts(images[i:i + 1], cfg, gen(10 + i)) for i in range(3)]
    calls = []
    real = F.grid_sample
    monkeypatch.setattr(cutouts_mod.F, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    batched = make_cutouts_batch(images, cfg, [gen(10 + i) for i in range(3)])
    assert len(calls) == 1 and batched.shape == (48, 3, 32, 32)
    for i, single in enumerate(singles):  # a job's cutouts do not depend on its batch-mates
        assert torch.allclose(batched[16 * i:16 * (i + 1)], single, atol=1e-6)


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(64, 64), (200, 200)])
def test_gradients_flow_to_image(h, w):
    img = random_image(h, w).requires_grad_()
    make_cutouts(img, CutoutConfig(cut_size=32, cutn=8), gen()).sum().backward()
    assert img.grad is not None
    assert img.grad.shape == img.shape
    assert torch.isfinite(img.grad).all()
    assert img.grad.abs().sum() > 0


# --- errors -------------------------------------------------------------------------------------

def test_unknown_augmentation_raises_naming_it():
    with pytest.raises(ValueError, match="sharpen"):
        CutoutConfig(cut_size=32, cutn=4, augments=("flip", "sharpen"))


def test_batch_of_two_images_raises():
    with pytest.raises(ValueError):
        make_cutouts(torch.rand(2, 3, 64, 64), CutoutConfig(cut_size=32, cutn=4), gen())


def test_three_dim_image_raises():
    with pytest.raises(ValueError):
        make_cutouts(torch.rand(3, 64, 64), CutoutConfig(cut_size=32, cutn=4), gen())
