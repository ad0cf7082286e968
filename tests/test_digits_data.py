"""The digits world (renders, splits, captions) and MNIST's IDX files."""

import gzip

import numpy as np
import pytest

from t2i.data import digits, idx
from t2i.errors import T2IError


def test_render_shape_dtype_and_mnist_like():
    img = digits.render(3, np.random.default_rng(0))
    assert img.shape == (32, 32) and img.dtype == np.uint8
    assert img.max() >= 250 and img[0].max() == 0 and img[:, 0].max() == 0  # white digit, black border
    assert 0.05 < (img > 128).mean() < 0.35


def test_render_is_deterministic_for_a_seed():
    a = digits.sample(16, np.random.default_rng(7))
    b = digits.sample(16, np.random.default_rng(7))
    c = digits.sample(16, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_every_digit_is_drawn_and_distinct():
    rng = np.random.default_rng(0)
    glyphs = digits.glyphs()
    assert glyphs.shape[:2] == (10, len(digits.STROKE_WIDTHS))
    means = [digits.render_batch(np.full(8, d), rng).astype(float).mean(0) for d in range(10)]
    for d in range(10):
        assert means[d].max() > 100, d
        for e in range(d):
            assert np.abs(means[d] - means[e]).mean() > 5, (d, e)


def test_bolder_strokes_cover_more_pixels():
    ink = digits.glyphs().sum(axis=(2, 3))
    assert (np.diff(ink, axis=1) > 0).all()


@pytest.mark.parametrize("split", digits.SPLITS)
def test_split_distortions_stay_in_their_cells(split):
    rot, shear = digits._rotation_and_shear(2000, np.random.default_rng(1), split)
    assert {digits.split_of(r, s) for r, s in zip(rot, shear)} == {split}
    # Each split still covers the whole range of each parameter.
    assert rot.min() < digits.ROTATION[0] + 3 and rot.max() > digits.ROTATION[1] - 3
    assert shear.min() < digits.SHEAR[0] + 0.05 and shear.max() > digits.SHEAR[1] - 0.05


def test_train_and_test_renders_differ_for_one_seed():
    train = digits.render_batch(np.arange(10), np.random.default_rng(3), "train")
    test = digits.render_batch(np.arange(10), np.random.default_rng(3), "test")
    assert not np.array_equal(train, test)


def test_bad_render_arguments():
    with pytest.raises(ValueError, match="split"):
        digits.render(1, np.random.default_rng(0), "validation")
    with pytest.raises(ValueError, match="0..9"):
        digits.render(10, np.random.default_rng(0))


def test_sample_labels_match_captions_and_images():
    images, labels, captions = digits.sample(64, np.random.default_rng(2))
    assert images.shape == (64, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert [digits.parse_digit(c) for c in captions] == labels.tolist()
    assert set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize("template", range(len(digits.TEMPLATES)))
def test_every_template_round_trips(template):
    rng = np.random.default_rng(0)
    texts = [digits.caption(d, rng, template) for d in range(10)]
    assert [digits.parse_digit(t) for t in texts] == list(range(10))
    assert len(set(texts)) == 10


def test_captions_read_well_and_prompts_parse():
    rng = np.random.default_rng(0)
    assert digits.caption(8, rng, digits.TEMPLATES.index("{an} {d}")) == "an 8"
    assert digits.caption(6, rng, digits.TEMPLATES.index("{an} {d}")) == "a 6"
    assert [digits.parse_digit(p) for p in digits.PROMPTS] == list(range(10))


@pytest.mark.parametrize("text, expected", [
    ("A HANDWRITTEN Seven", 7), ("number 4.", 4), ("someone", None), ("12", None), ("six or 6", 6),
    ("six and seven", None), ("", None), ("a cat", None),
])
def test_parse_digit_edge_cases(text, expected):
    assert digits.parse_digit(text) == expected


# --- IDX -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    idx.write_idx(tmp_path / name, array)
    back = idx.read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and np.array_equal(back, array)
    raw = (tmp_path / name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (5).to_bytes(4, "big")
    assert not list(tmp_path.glob("*.tmp"))


def test_idx_round_trip_other_types(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    idx.write_idx(tmp_path / "f.idx", array)
    assert np.array_equal(idx.read_idx(tmp_path / "f.idx"), array)


def _write_mnist(folder, n_images=6, n_labels=6, gz=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, n_labels).astype(np.uint8)
    suffix = ".gz" if gz else ""
    idx.write_idx(folder / f"train-images-idx3-ubyte{suffix}", images)
    idx.write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_a_folder(tmp_path, gz):
    images, labels = _write_mnist(tmp_path, gz=gz)
    got_images, got_labels = idx.load_mnist(tmp_path, "train")
    assert np.array_equal(got_images, images) and got_labels.dtype == np.int64
    assert np.array_equal(got_labels, labels)


def _one_line_naming(err, path):
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(err.value, T2IError)


def test_bad_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(idx.IdxError, match="magic") as err:
        idx.read_idx(path)
    _one_line_naming(err, path)


def test_truncated_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    idx.write_idx(path, np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(idx.IdxError, match="bytes") as err:
        idx.read_idx(path)
    _one_line_naming(err, path)


def test_truncated_header(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(idx.IdxError, match="header") as err:
        idx.read_idx(path)
    _one_line_naming(err, path)


def test_junk_gzip(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(idx.IdxError, match="gzip") as err:
        idx.read_idx(path)
    _one_line_naming(err, path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    idx.write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(idx.IdxError) as err:
        idx.read_idx(path)
    _one_line_naming(err, path)


def test_count_mismatch(tmp_path):
    _write_mnist(tmp_path, n_images=6, n_labels=5)
    with pytest.raises(idx.IdxError, match="5 labels for 6 images") as err:
        idx.load_mnist(tmp_path, "train")
    _one_line_naming(err, tmp_path / "train-labels-idx1-ubyte.gz")


def test_missing_files_and_swapped_files(tmp_path):
    with pytest.raises(idx.IdxError, match="no such file"):
        idx.load_mnist(tmp_path, "train")
    _write_mnist(tmp_path)
    images, labels = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    with pytest.raises(idx.IdxError, match="expected uint8 images") as err:
        idx.load_mnist((labels, images))
    _one_line_naming(err, labels)


def test_mnist_sampler_pads_and_captions(tmp_path):
    images, labels = _write_mnist(tmp_path, n_images=20, n_labels=20)
    sample = idx.mnist_sampler(*idx.load_mnist(tmp_path))
    got_images, got_labels, captions = sample(8, np.random.default_rng(0))
    assert got_images.shape == (8, 32, 32) and got_images.dtype == np.uint8
    assert got_images[:, :2].max() == 0 and got_images[:, :, -2:].max() == 0  # 2 px black padding
    assert [digits.parse_digit(c) for c in captions] == got_labels.tolist()
    for img, label in zip(got_images, got_labels):
        assert any(np.array_equal(img[2:30, 2:30], m) for m, l in zip(images, labels) if l == label)
    again = sample(8, np.random.default_rng(0))
    assert np.array_equal(again[0], got_images) and again[2] == captions
