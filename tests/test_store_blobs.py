"""Frames, results and uploads in the filesystem BlobStore behind the store contract ($T2I_BLOBS,
t2i/store/sql_blobs.py), on both backends: the rows hold refs, the bytes are files; a job deleted takes
its blobs; orphans of a crashed or fenced-off writer are swept and nothing a row refers to is; a blob
deleted under a finished job is one line on the page; a full or read-only blob folder (a real tmpfs)
is the store's fault: no row is written, the job stays running, and it completes once the folder
can be written again."""

import hashlib
import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from t2i.paths import ROOT
from t2i.store import Lease, Result, StoreError, open_store
from t2i.store.blobs import BlobError
from t2i.store.uploads import Upload

from small_disks import fill, mount_or_skip, umount  # tests/small_disks.py


@pytest.fixture
def blob_dir(tmp_path, monkeypatch):
    folder = tmp_path / "blobs"
    monkeypatch.setenv("T2I_BLOBS", str(folder))
    return folder


@pytest.fixture
def store(store_url, blob_dir):
    s = open_store(store_url)
    yield s
    s.close()


def upload(data: bytes) -> Upload:
    return Upload(hashlib.sha256(data).hexdigest(), data, "image/png")


def result(job_id: int, tag: bytes = b"") -> Result:
    return Result(job_id, b"GIF89a" + tag, b"\x89PNG" + tag, b"thumb", {"prompt": "p"}, 8, 8, 7, 0.0)


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_frames_results_and_uploads_are_files_and_the_rows_hold_refs(store, blob_dir):
    image = upload(b"an uploaded image")
    job_id = store.submit({"prompt": "p", "preset": "x", "init_image": {"upload": image.sha256}}, batch_key="k",
                          total=3, uploads=[image])
    assert store.upload(image.sha256) == b"an uploaded image"
    job = store.claim("w", 60)
    assert store.add_frame(job.lease, 1, b"frame one") and store.add_frame(job.lease, 2, b"frame two")
    assert store.frames(job_id) == [(1, b"frame one"), (2, b"frame two")]
    assert store.latest_frame(job_id) == (2, b"frame two")
    assert store.drop_frames(job.lease, [1]) == 1 and store.frames(job_id) == [(2, b"frame two")]
    assert f"frames/{job_id}/1/000002.png" in files(blob_dir) and f"frames/{job_id}/1/000001.png" not in files(blob_dir)
    # the database keeps refs, not bytes
    assert store._one("SELECT length(png), ref FROM frames WHERE job_id = ?", (job_id,)) == (
        0, f"frames/{job_id}/1/000002.png")
    assert store.complete(job.lease, result(job_id))
    assert store._one("SELECT length(gif), length(png), gif_ref FROM results WHERE job_id = ?", (job_id,)) == (
        0, 0, f"results/{job_id}/1.gif")
    got = store.result(job_id)
    assert (got.gif, got.png, got.gone) == (b"GIF89a", b"\x89PNG", None)
    assert store.result(job_id, heavy=False).thumbnail == b"thumb"
    assert not any(f.startswith("frames/") for f in files(blob_dir))  # a finished job's frames are dropped
    # deleting the job deletes its rows and its blobs (the upload stays: other jobs may use it)
    assert store.delete_job(job_id) and store.get(job_id) is None and store.result(job_id) is None
    assert not any(f.startswith(f"results/{job_id}/") for f in files(blob_dir))
    assert store.upload(image.sha256) == b"an uploaded image"
    assert not store.delete_job(job_id)


def test_a_blob_deleted_under_a_finished_job_reads_as_one_line(store, blob_dir):
    job_id = store.submit({"prompt": "p", "preset": "x"}, batch_key="k", total=1)
    job = store.claim("w", 60)
    assert store.complete(job.lease, result(job_id))
    os.unlink(blob_dir / "results" / str(job_id) / "1.png")
    got = store.result(job_id)
    assert got.png is None and got.gif == b"GIF89a"
    assert got.gone == f"the image of job {job_id} is gone: its file was deleted from the blob folder"
    assert store.gallery(status="done", limit=5)[1] == 1  # listing never reads the blobs


def test_the_orphan_sweep_removes_what_no_row_refers_to_and_nothing_else(store, blob_dir):
    a = store.submit({"prompt": "a", "preset": "x"}, batch_key="k", total=1)
    b = store.submit({"prompt": "b", "preset": "x"}, batch_key="k", total=1)
    job_a, job_b = store.claim("w", 60), store.claim("w", 60)
    assert store.complete(job_a.lease, result(a))
    # a crash between the blob writes and the commit: the blobs are there, no row refers to them
    store._result_refs(job_b.lease, b"GIF89a orphan", b"\x89PNG orphan")
    # a worker presumed dead writes a frame: fenced off, its blob refers to nothing
    stale = Lease(job_b.id, "an earlier worker", job_b.attempts - 1)
    assert store.add_frame(stale, 3, b"late") is False
    assert store.add_frame(job_b.lease, 1, b"live frame")
    before = files(blob_dir)
    assert store.clean_blobs() == 0  # younger than a writer could take to commit: kept
    assert store.clean_blobs(older_than=0) == 3
    assert before - files(blob_dir) == {f"results/{b}/1.gif", f"results/{b}/1.png", f"frames/{b}/0/000003.png"}
    # every ref a row holds still has its blob
    assert store.result(a).gone is None and store.frames(b) == [(1, b"live frame")]
    assert store.complete(job_b.lease, result(b, b" real"))
    assert store.result(b).png == b"\x89PNG real"


def test_an_expired_attempts_frames_go_with_it(store, blob_dir):
    job_id = store.submit({"prompt": "p", "preset": "x"}, batch_key="k", total=3)
    job = store.claim("w", 0.05)
    assert store.add_frame(job.lease, 1, b"f")
    deadline = time.monotonic() + 10
    while store.sweep() == (0, 0):
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.02)  # polling for the lease's expiry
    assert store.get(job_id).status == "queued" and store.frames(job_id) == []
    assert not (blob_dir / "frames" / str(job_id) / "1").exists()


def test_the_gallery_page_says_the_image_is_gone(blob_dir, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    store = open_store(url)
    job_id = store.submit({"prompt": "a lost picture", "preset": "tiny-vqgan-untrained"}, batch_key="k", total=1)
    job = store.claim("w", 60)
    assert store.complete(job.lease, result(job_id))
    store.close()
    os.unlink(blob_dir / "results" / str(job_id) / "1.gif")
    monkeypatch.setenv("T2I_DB", url)
    at = AppTest.from_file(str(ROOT / "t2i" / "web" / "gallery.py"), default_timeout=60)
    at.session_state["gallery_detail"] = job_id
    at.run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == [f"the image of job {job_id} is gone: its file was deleted from the "
                                             "blob folder"]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_blob_folder_writes_no_row_and_the_job_completes_later(store_url, tmp_path,
                                                                                   monkeypatch, fault):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount_or_skip("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk))
    try:
        monkeypatch.setenv("T2I_BLOBS", str(disk / "blobs"))
        store = open_store(store_url)
        job_id = store.submit({"prompt": "p", "preset": "x"}, batch_key="k", total=1)
        job = store.claim("w", 60)
        if fault == "full":
            filler = fill(disk)
        else:
            mount_or_skip("-o", "remount,ro", str(disk))
        with pytest.raises(BlobError) as frame_error:
            store.add_frame(job.lease, 1, b"x" * 50_000)
        assert isinstance(frame_error.value, StoreError) and "\n" not in str(frame_error.value)
        with pytest.raises(StoreError):
            store.complete(job.lease, result(job_id, b"y" * 50_000))
        assert store.frames(job_id) == [] and store.result(job_id) is None
        assert store.get(job_id).status == "running"  # the store's fault: the job is not charged
        if fault == "full":
            os.remove(filler)
        else:
            mount_or_skip("-o", "remount,rw", str(disk))
        assert store.complete(job.lease, result(job_id, b"y" * 50_000))
        assert store.result(job_id).png == b"\x89PNG" + b"y" * 50_000
        assert not list(disk.rglob(".tmp-*"))  # nothing half-written left behind
        store.close()
    finally:
        umount(disk)
