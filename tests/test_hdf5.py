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
