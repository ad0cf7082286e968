"""The filesystem BlobStore: round trips, atomic writes (a failed or crashed write leaves no blob),
missing keys and refs that try to leave the root. Real files; failures are real (a file-size limit
on a child process, a folder where the file should go)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from t2i.store.blobs import TEMP_PREFIX, BlobError, FileBlobStore, check_key, content_key

ROOT = Path(__file__).resolve().parent.parent


def temps(root: Path) -> list[Path]:
    return list(root.rglob(TEMP_PREFIX + "*"))


def test_round_trip_replace_delete(tmp_path):
    blobs = FileBlobStore(tmp_path / "blobs")
    ref = blobs.put("frames/42/0010.png", b"\x89PNG first")
    assert ref == "frames/42/0010.png"
    assert blobs.exists(ref) and blobs.get(ref) == b"\x89PNG first"
    assert blobs.put(ref, b"second") == ref  # a repeated key replaces the blob
    assert blobs.get(ref) == b"second"
    big = os.urandom(3 * 1024 * 1024)
    assert blobs.get(blobs.put("results/42.gif", big)) == big
    assert blobs.get(blobs.put("empty", b"")) == b""
    assert blobs.delete(ref) is True
    assert not blobs.exists(ref) and blobs.get(ref) is None
    assert temps(tmp_path) == []


def test_missing_keys(tmp_path):
    blobs = FileBlobStore(tmp_path)
    assert blobs.get("frames/1/0001.png") is None
    assert blobs.exists("frames/1/0001.png") is False
    assert blobs.delete("frames/1/0001.png") is False
    blobs.put("frames/1/0001.png", b"x")
    # A prefix of blobs is a folder, not a blob.
    assert blobs.get("frames/1") is None and not blobs.exists("frames/1") and blobs.delete("frames/1") is False


def test_content_key_deduplicates(tmp_path):
    blobs = FileBlobStore(tmp_path)
    a, b = content_key(b"same"), content_key(b"same")
    assert a == b and a.startswith("sha256/") and a != content_key(b"other")
    blobs.put(a, b"same")
    assert blobs.get(b) == b"same"


@pytest.mark.parametrize("bad", ["../escape", "a/../../etc/passwd", "/etc/passwd", "a//b", "a/./b", ".hidden",
                                 "a/.tmp-x", "a\\b", "a b", "", "x" * 600, "frames/\x00"])
def test_bad_refs_refused_with_one_line(tmp_path, bad):
    blobs = FileBlobStore(tmp_path / "root")
    for call in (lambda: blobs.put(bad, b"x"), lambda: blobs.get(bad), lambda: blobs.delete(bad),
                 lambda: blobs.exists(bad)):
        with pytest.raises(BlobError) as e:
            call()
        assert "\n" not in str(e.value) and "bad blob reference" in str(e.value)
    assert not (tmp_path / "escape").exists() and list(tmp_path.iterdir()) == [tmp_path / "root"]


def test_symlink_out_of_root_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    blobs = FileBlobStore(tmp_path / "root")
    (tmp_path / "root" / "link").symlink_to(outside)
    with pytest.raises(BlobError, match="outside"):
        blobs.put("link/x", b"x")
    assert list(outside.iterdir()) == []


def test_check_key_returns_valid_keys():
    assert check_key("results/7.png") == "results/7.png"
    with pytest.raises(BlobError):
        check_key(7)


def test_failed_write_leaves_no_file_and_no_temp(tmp_path):
    """os.replace onto a folder fails after the temporary file was fully written: nothing is left."""
    blobs = FileBlobStore(tmp_path)
    blobs.put("a/b/c", b"inner")  # a/b is now a folder
    with pytest.raises(BlobError) as e:
        blobs.put("a/b", b"x" * 100_000)
    assert "\n" not in str(e.value) and "cannot write blob 'a/b'" in str(e.value)
    assert (tmp_path / "a" / "b").is_dir() and temps(tmp_path) == []
    with pytest.raises(BlobError, match="must be bytes"):
        blobs.put("k", "text")
    assert not blobs.exists("k") and temps(tmp_path) == []


def _child(tmp_path, code: str, xfsz: str):
    """Run `code` in a child whose files may not grow past 64 KiB (a full disk, for that process)."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        signal.signal(signal.SIGXFSZ, signal.{xfsz})
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        from t2i.store.blobs import FileBlobStore, BlobError
        blobs = FileBlobStore({str(tmp_path)!r})
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.subprocess
def test_write_failing_midway_leaves_nothing(tmp_path):
    """The disk fills up during the write (EFBIG past the limit): one line, no blob, no temporary file,
    and the blob that was there before is intact."""
    FileBlobStore(tmp_path).put("results/1.gif", b"old")
    run = _child(tmp_path, """
        try:
            blobs.put("results/1.gif", b"y" * 200_000)
        except BlobError as e:
            print(e)
    """, "SIG_IGN")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and "cannot write blob 'results/1.gif'" in run.stdout
    assert FileBlobStore(tmp_path).get("results/1.gif") == b"old"
    assert temps(tmp_path) == []


@pytest.mark.subprocess
def test_crash_mid_write_leaves_no_partial_blob(tmp_path):
    """The writer is killed mid-write (SIGXFSZ's default action): the final name never shows a partial
    file; the orphaned temporary file is invisible to reads and clean() removes it."""
    run = _child(tmp_path, 'blobs.put("frames/9/0010.png", b"z" * 200_000)\nprint("survived")', "SIG_DFL")
    assert run.returncode < 0 and "survived" not in run.stdout  # killed by the signal
    blobs = FileBlobStore(tmp_path)
    assert blobs.get("frames/9/0010.png") is None and not blobs.exists("frames/9/0010.png")
    leftovers = temps(tmp_path)
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < 200_000  # a partial write, hidden
    assert blobs.clean(older_than=3600) == 0  # too young: may be a write in progress
    assert blobs.clean(older_than=0) == 1 and temps(tmp_path) == []


def test_root_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(BlobError) as e:
        FileBlobStore(tmp_path / "file")
    assert "\n" not in str(e.value) and "cannot use" in str(e.value)
