"""The seed's HDF5 layout (GAN-INT-CLS's converted flowers.hd5): real h5py files written, read back,
broken in the ways files break, and the flowers world exported to it."""

import h5py
import numpy as np
import pytest
import torch

from t2i.data import flowers, hdf5
from t2i.data.hdf5 import Example, HDF5Error
from t2i.engine.charclip import build_char_clip


def _examples(n=3, d=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, scene in enumerate(flowers.heldout_scenes(n, seed)):
        captions = [flowers.caption(scene, t) for t in range(k)]
        out.append(Example(f"img_{i:02d}", flowers.render(scene), captions,
                           rng.standard_normal((k, d)).astype(np.float32), f"class_{i % 2:05d}"))
    return out


def test_round_trip_png_is_identical(tmp_path):
    path = tmp_path / "flowers.hd5"
    examples = _examples()
    hdf5.write(path, "train", examples, image_format="png")
    with hdf5.read(path, "train") as ds:
        records = list(ds)
        assert ds.width == 6
    assert len(records) == 6  # one record per (image, caption), as the seed's trainer samples
    by_key = {(r.name, r.caption): r for r in records}
    for ex in examples:
        for caption, emb in zip(ex.captions, ex.embeddings):
            r = by_key[(ex.name, caption)]
            assert np.array_equal(r.image, ex.image) and r.cls == ex.cls
            assert r.embedding.dtype == np.float32 and np.array_equal(r.embedding, emb)


def test_layout_is_the_seeds(tmp_path):
    """split/<name>_<c>/{name, img (void bytes), embeddings (d,), class, txt}; img opens with PIL as
    the seed's trainer opens it (Image.open(BytesIO(bytes(np.array(example['img'])))))."""
    import io

    from PIL import Image
    path = tmp_path / "flowers.hd5"
    hdf5.write(path, "valid", _examples(n=1, k=2))
    with h5py.File(path, "r") as f:
        assert sorted(f["valid"]) == ["img_00_0", "img_00_1"]
        g = f["valid"]["img_00_1"]
        assert sorted(g) == sorted(hdf5.FIELDS)
        assert g["embeddings"].shape == (6,) and g["embeddings"].dtype == np.float32
        assert g["img"].dtype.kind == "V"
        image = Image.open(io.BytesIO(bytes(np.array(g["img"]))))
        assert image.format == "JPEG" and image.size == (64, 64)
        assert np.array(g["txt"]).astype(str).item().startswith("a flower with")


def test_jpeg_round_trip_is_close_and_other_splits_are_kept(tmp_path):
    path = tmp_path / "flowers.hd5"
    examples = _examples()
    hdf5.write(path, "train", examples)
    hdf5.write(path, "test", _examples(n=1, seed=1))
    hdf5.write(path, "test", _examples(n=2, seed=2))  # replaces test, keeps train
    with hdf5.read(path, "train") as ds:
        assert len(ds) == 6
        assert np.abs(ds[0].image.astype(int) - examples[0].image.astype(int)).mean() < 4
    with hdf5.read(path, "test") as ds:
        assert len(ds) == 4


def test_seed_variant_with_k_embeddings_per_group(tmp_path):
    path = tmp_path / "k.hd5"
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        g = f.create_group("train").create_group("a")
        g.create_dataset("name", data="a", dtype=text)
        g.create_dataset("img", data=np.void(hdf5.encode_image(np.zeros((8, 8, 3), np.uint8), "png")))
        g.create_dataset("embeddings", data=np.eye(3, 4, dtype=np.float32))
        g.create_dataset("class", data="c", dtype=text)
        g.create_dataset("txt", data=["one", "two", "three"], dtype=text)
    with hdf5.read(path, "train") as ds:
        assert [r.caption for r in ds] == ["one", "two", "three"]
        assert np.array_equal(ds[2].embedding, np.eye(3, 4, dtype=np.float32)[2])


def _one_line(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def test_not_hdf5_truncated_and_missing(tmp_path):
    junk = tmp_path / "junk.hd5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(HDF5Error) as e:
        hdf5.read(junk, "train")
    _one_line(e, str(junk), "not a readable HDF5 file")
    good = tmp_path / "good.hd5"
    hdf5.write(good, "train", _examples(n=4))
    cut = tmp_path / "cut.hd5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(HDF5Error) as e:
        with hdf5.read(cut, "train") as ds:
            list(ds)
    _one_line(e, str(cut))
    with pytest.raises(HDF5Error) as e:
        hdf5.read(tmp_path / "absent.hd5", "train")
    _one_line(e, "absent.hd5", "no such file")
    with pytest.raises(HDF5Error) as e:
        hdf5.read(good, "test")
    _one_line(e, str(good), "no split 'test'", "train")


def test_missing_field_and_mismatched_embeddings_in_a_file(tmp_path):
    path = tmp_path / "f.hd5"
    hdf5.write(path, "train", _examples(n=2))
    with h5py.File(path, "a") as f:
        del f["train"]["img_01_0"]["txt"]
    with pytest.raises(HDF5Error) as e:
        hdf5.read(path, "train")
    _one_line(e, str(path), "train/img_01_0", "no field 'txt'")
    hdf5.write(path, "train", _examples(n=2))
    with h5py.File(path, "a") as f:
        del f["train"]["img_01_1"]["embeddings"]
        f["train"]["img_01_1"].create_dataset("embeddings", data=np.zeros(5, np.float32))
    with pytest.raises(HDF5Error) as e:
        hdf5.read(path, "train")
    _one_line(e, str(path), "train/img_01_1", "embeddings of 5 values", "6")


def test_failed_writes_leave_nothing_half_written(tmp_path):
    path = tmp_path / "f.hd5"
    bad = _examples(n=2)
    bad[1] = Example(bad[1].name, bad[1].image, bad[1].captions, np.zeros((2, 7), np.float32), bad[1].cls)
    with pytest.raises(HDF5Error) as e:
        hdf5.write(path, "train", bad)
    _one_line(e, str(path), "train/img_01", "embeddings of 7 values", "6")
    assert list(tmp_path.iterdir()) == []
    hdf5.write(path, "train", _examples(n=2))
    before = path.read_bytes()
    with pytest.raises(HDF5Error) as e:  # another width than the file's train split
        hdf5.write(path, "test", _examples(n=1, d=9))
    _one_line(e, "test", "9 values", "train split has 6")
    # An image that cannot be encoded fails inside the write: the old file stays, no temporary left.
    broken = [Example("x", np.zeros((4, 4, 3), np.float64), ["a"], np.zeros((1, 6), np.float32), "c")]
    with pytest.raises(TypeError):
        hdf5.write(path, "test", broken)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.hd5"]
    with pytest.raises(HDF5Error) as e:
        hdf5.write(path, "train", [Example("y", np.zeros((4, 4, 3), np.uint8), ["a", "b"],
                                            np.zeros((1, 6), np.float32), "c")])
    _one_line(e, "train/y", "(captions=2, d)")


def test_export_world_with_a_text_encoder(tmp_path):
    path = tmp_path / "world.hd5"
    torch.manual_seed(0)
    clip = build_char_clip(dim=16, char_dim=8, hidden=16, layers=1, image_width=8, max_length=96,
                           channels=3, image_size=64).eval()
    hdf5.export_world(path, {"train": 3, "valid": 2, "test": 2}, text_encoder=clip, image_format="png")
    with hdf5.read(path, "test") as ds:
        assert len(ds) == 2 * hdf5.CAPTIONS_PER_IMAGE and ds.width == 16
        r = ds[0]
        named = flowers.parse_caption(r.caption)
        assert named is not None
        assert flowers.split_of((r.cls.split("-")[0], r.cls.split("-")[1], int(r.cls.split("-")[2]))) == "heldout"
        assert np.allclose(r.embedding, clip.encode_text([r.caption])[0].detach().numpy(), atol=1e-6)
    with hdf5.read(path, "train") as ds:
        assert len(ds) == 3 * hdf5.CAPTIONS_PER_IMAGE
        assert all(flowers.split_of(tuple(r.cls.split("-")[:2]) + (int(r.cls.split("-")[2]),)) == "train" for r in ds)
    hdf5.export_world(tmp_path / "plain.hd5", 1)  # no encoder: (0,)-sized embeddings, captions kept
    with hdf5.read(tmp_path / "plain.hd5", "valid") as ds:
        assert ds.width == 0 and ds[0].embedding.shape == (0,) and ds[0].caption


# --- bad files through the trainer's CLI (issue 28, finding 7): one line, exit 2, no traceback --------

TEXT = h5py.string_dtype("utf-8")


def _png(width=8, height=8) -> bytes:
    return hdf5.encode_image(np.zeros((height, width, 3), np.uint8), "png")


def _group(f, key="a_0", split="train", **fields):
    """One example group of the seed's layout; a field given as a callable(group) is made by it instead."""
    g = f.require_group(split).create_group(key)
    made = {"name": lambda g: g.create_dataset("name", data="a", dtype=TEXT),
            "img": lambda g: g.create_dataset("img", data=np.void(_png())),
            "embeddings": lambda g: g.create_dataset("embeddings", data=np.ones(4, np.float32)),
            "class": lambda g: g.create_dataset("class", data="c", dtype=TEXT),
            "txt": lambda g: g.create_dataset("txt", data="a caption", dtype=TEXT)}
    for field, make in {**made, **fields}.items():
        if make is not None:
            make(g)
    return g


def _bad_file(tmp_path, case) -> str:
    """A real bad file (or folder) for `case`; returns its path."""
    path = tmp_path / f"{case}.hd5"
    if case == "folder":
        path.mkdir()
        return str(path)
    with h5py.File(path, "w") as f:
        if case == "empty split":
            f.create_group("train")
        elif case == "8 GiB declared":  # no data written: HDF5 reads it back as 8 GiB of fill values
            _group(f, embeddings=lambda g: g.create_dataset("embeddings", shape=(2**31,), dtype=np.float32))
        elif case == "field is a group":
            _group(f, embeddings=lambda g: g.create_group("embeddings"))
        elif case == "too many pixels":  # 5000x5000 of one colour: a few kB as a PNG, 75 MB decoded
            _group(f, img=lambda g: g.create_dataset("img", data=np.void(_png(5000, 5000))))
    return str(path)


CLI_CASES = {"folder": "is a directory, not an HDF5 file",
             "empty split": "split 'train' is empty (no examples)",
             "8 GiB declared": "train/a_0: embeddings declares 8.0 GiB (float32 (2147483648,)) in a file of",
             "field is a group": "train/a_0: embeddings is a group, not a dataset",
             "too many pixels": "train/a_0: img of 5000x5000 pixels, more than 16777216"}


def _train_args(tmp_path, path) -> list[str]:
    return ["--out", str(tmp_path / "out"), "--data", path, "--epochs", "1", "--steps-per-epoch", "1"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_files_are_one_error_from_the_trainer(tmp_path, case):
    """The trainer's own entry (main) turns every bad file into a T2IError, which `python -m
    t2i.train.gan` prints as one line (the subprocess test below runs that path once)."""
    from t2i.errors import T2IError
    from t2i.train.gan import main

    path = _bad_file(tmp_path, case)
    if case == "8 GiB declared":
        assert (tmp_path / f"{case}.hd5").stat().st_size < 16_000
    with pytest.raises(T2IError) as caught:
        main(_train_args(tmp_path, path))
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
    assert CLI_CASES[case] in str(caught.value)


@pytest.mark.subprocess
def test_a_bad_file_is_one_line_from_python_m_t2i_train_gan(tmp_path):
    import subprocess
    import sys

    from t2i.paths import ROOT

    case = "8 GiB declared"
    path = _bad_file(tmp_path, case)
    run = subprocess.run([sys.executable, "-m", "t2i.train.gan", *_train_args(tmp_path, path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"error: {path}: "), run.stderr
    assert CLI_CASES[case] in run.stderr, run.stderr


# --- the same checks in process, on every field -------------------------------------------------------

def _read_fails(tmp_path, words, split="train", **fields):
    path = tmp_path / "f.hd5"
    with h5py.File(path, "w") as f:
        _group(f, **fields)
    with pytest.raises(HDF5Error) as e:
        with hdf5.read(path, split) as ds:
            list(ds)
    _one_line(e, str(path), words)


@pytest.mark.parametrize("fields, words", [
    # Declared sizes beyond the file's: 9.5 MiB of image that the file does not hold (the bound is 32 MiB).
    (dict(img=lambda g: g.create_dataset("img", shape=(10_000_000,), dtype=np.uint8)), "img declares 9.5 MiB"),
    (dict(embeddings=lambda g: g.create_dataset("embeddings", data=np.ones(9000, np.float32))),
     "at most 1024 of at most 8192 values"),
    (dict(img=lambda g: g.create_dataset("img", data=np.ones(64, np.float32))), "img must be an encoded image's bytes"),
    (dict(txt=lambda g: g.create_dataset("txt", data=7)), "txt must be text"),
    (dict(name=lambda g: g.create_dataset("name", data=np.zeros(2_000_000, "S1"))), "name must be text of at most"),
])
def test_every_field_is_checked_before_reading(tmp_path, fields, words):
    _read_fails(tmp_path, words, **fields)


def test_odd_split_names_are_no_split(tmp_path):
    for split in (".", "train/", "", "/"):
        _read_fails(tmp_path, "no split", split=split)


def test_a_caption_with_a_stray_byte_reads(tmp_path):
    path = tmp_path / "f.hd5"
    with h5py.File(path, "w") as f:
        _group(f, txt=lambda g: g.create_dataset("txt", data=np.bytes_(b"caf\xe9 flower")))
    with hdf5.read(path, "train") as ds:
        assert ds[0].caption == "caf\ufffd flower"


def test_a_split_that_is_a_dataset_says_so(tmp_path):
    path = tmp_path / "f.hd5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train", data=np.zeros(3))
    with pytest.raises(HDF5Error) as e:
        hdf5.read(path, "train")
    _one_line(e, str(path), "train is not a group of examples")
