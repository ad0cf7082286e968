"""t2i.assets.download against a real HTTP server on loopback (no mocks of urllib)."""
from __future__ import annotations

import random
import socket
from http.server import BaseHTTPRequestHandler

import pytest

from t2i.assets.download import DownloadError, fetch

from conftest import serve_http

PAYLOAD = random.Random(1234).randbytes(300_000)
OTHER = random.Random(99).randbytes(1_000)  # /other.bin: another file (an error page, another release)
DROP_AT = 123_457  # bytes sent before /drop/ closes the socket
DROP_ALWAYS_AT = 50_000  # per response on /dropalways/, so 3 tries stay short of the file


class _Handler(BaseHTTPRequestHandler):
    """Paths: /a.bin (honours Range), /norange/a.bin (ignores it), /drop/a.bin (first
    response cut after DROP_AT bytes), /dropalways/a.bin (every response cut), /nolength/a.bin
    (no Content-Length, ignores Range, every response cut), /other.bin (OTHER); else 404."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            first = self.path not in srv.seen
            srv.seen.add(self.path)
        if self.path == "/other.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(OTHER)))
            self.end_headers()
            self.wfile.write(OTHER)
            return
        if self.path == "/nolength/a.bin":
            # HTTP/1.0 without a length: the body ends when the server closes, so a cut looks complete.
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[:DROP_ALWAYS_AT])
            return
        if self.path not in ("/a.bin", "/norange/a.bin", "/drop/a.bin", "/dropalways/a.bin"):
            self.send_error(404)
            return
        start = 0
        if rng and not self.path.startswith("/norange/"):
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/dropalways/a.bin":
            body = body[:DROP_ALWAYS_AT]
        elif self.path == "/drop/a.bin" and first:
            body = body[:DROP_AT]
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    yield from serve_http(_Handler, monkeypatch, requests=[], seen=set())


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _part(dest):
    return dest.with_name(dest.name + ".part")


def test_plain_download(server, tmp_path):
    dest = tmp_path / "sub" / "a.bin"
    assert fetch([server.base + "/a.bin"], dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert server.requests == [("/a.bin", None)]


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    fetch([server.base + "/a.bin"], tmp_path / "a.bin", progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "a.bin" in err


def test_existing_dest_makes_no_request(server, tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"already here")
    assert fetch([server.base + "/a.bin"], dest, progress=False) == dest
    assert dest.read_bytes() == b"already here"
    assert server.requests == []


def test_404_falls_through_to_next_mirror(server, tmp_path):
    dest = tmp_path / "a.bin"
    fetch([server.base + "/missing.bin", server.base + "/a.bin"], dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == ["/missing.bin", "/a.bin"]


def test_connection_refused_falls_through(server, tmp_path):
    dest = tmp_path / "a.bin"
    dead = f"http://127.0.0.1:{_closed_port()}/a.bin"
    fetch([dead, server.base + "/a.bin"], dest, progress=False, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", None)]


def test_resume_sends_range_and_appends(server, tmp_path):
    dest = tmp_path / "a.bin"
    _part(dest).write_bytes(PAYLOAD[:100_000])
    fetch([server.base + "/a.bin"], dest, progress=False)
    assert server.requests == [("/a.bin", "bytes=100000-")]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_complete_part_is_just_finished(server, tmp_path):
    dest = tmp_path / "a.bin"
    _part(dest).write_bytes(PAYLOAD)
    fetch([server.base + "/a.bin"], dest, progress=False)
    assert server.requests == [("/a.bin", f"bytes={len(PAYLOAD)}-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    dest = tmp_path / "a.bin"
    _part(dest).write_bytes(PAYLOAD[:100_000])
    fetch([server.base + "/norange/a.bin"], dest, progress=False)
    assert server.requests == [("/norange/a.bin", "bytes=100000-")]
    assert dest.read_bytes() == PAYLOAD  # not 100000 bytes + the whole file


def test_dropped_connection_is_resumed(server, tmp_path):
    dest = tmp_path / "a.bin"
    fetch([server.base + "/drop/a.bin"], dest, progress=False)
    assert server.requests == [("/drop/a.bin", None), ("/drop/a.bin", f"bytes={DROP_AT}-")]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_all_mirrors_fail(server, tmp_path):
    dest = tmp_path / "vqgan.ckpt"
    urls = [server.base + "/dropalways/a.bin", server.base + "/missing.bin"]
    with pytest.raises(DownloadError) as info:
        fetch(urls, dest, progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "vqgan.ckpt" in msg
    assert f"HTTP 404 from {server.base}/missing.bin" in msg
    assert not dest.exists()
    kept = _part(dest).read_bytes()
    assert len(kept) == 3 * DROP_ALWAYS_AT and kept == PAYLOAD[:len(kept)]
    # The flaky mirror was retried, resuming each time, before moving on.
    assert [r for p, r in server.requests if p == "/dropalways/a.bin"] == [
        None, f"bytes={DROP_ALWAYS_AT}-", f"bytes={2 * DROP_ALWAYS_AT}-"]
    # A later call resumes from what was kept.
    fetch([server.base + "/a.bin"], dest, progress=False)
    assert server.requests[-1] == ("/a.bin", f"bytes={len(kept)}-")
    assert dest.read_bytes() == PAYLOAD


def test_no_urls_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="a.bin"):
        fetch([], tmp_path / "a.bin", progress=False)


# --- the expected length (configs/weights.yaml's `size`) ---------------------------------------------

def test_known_size_downloads_and_resumes(server, tmp_path):
    dest = tmp_path / "a.bin"
    _part(dest).write_bytes(PAYLOAD[:100_000])
    fetch([server.base + "/a.bin"], dest, size=len(PAYLOAD), progress=False)
    assert server.requests == [("/a.bin", "bytes=100000-")]
    assert dest.read_bytes() == PAYLOAD


def test_mirror_with_a_file_of_another_length_falls_through_at_once(server, tmp_path):
    dest = tmp_path / "a.bin"
    fetch([server.base + "/other.bin", server.base + "/a.bin"], dest, size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    # Refused on its announced length, before any byte was written, and not retried: it would not change.
    assert [p for p, _ in server.requests] == ["/other.bin", "/a.bin"]


def test_size_mismatch_is_refused_and_never_takes_the_real_name(server, tmp_path):
    dest = tmp_path / "vqgan.ckpt"
    with pytest.raises(DownloadError) as info:
        fetch([server.base + "/a.bin"], dest, size=len(PAYLOAD) + 1, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "vqgan.ckpt" in msg
    assert f"{len(PAYLOAD)} bytes offered, {len(PAYLOAD) + 1} expected from {server.base}/a.bin" in msg
    assert not dest.exists() and not _part(dest).exists()


def test_truncated_download_without_a_length_is_not_renamed(server, tmp_path):
    # The server closes early and never said how long the file is: only the registry's size tells.
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match=f"connection dropped after {DROP_ALWAYS_AT} of {len(PAYLOAD)} bytes"):
        fetch([server.base + "/nolength/a.bin"], dest, size=len(PAYLOAD), progress=False)
    assert not dest.exists()
    assert _part(dest).read_bytes() == PAYLOAD[:DROP_ALWAYS_AT]  # kept for a later run from a better mirror
    fetch([server.base + "/a.bin"], dest, size=len(PAYLOAD), progress=False)
    assert server.requests[-1] == ("/a.bin", f"bytes={DROP_ALWAYS_AT}-")
    assert dest.read_bytes() == PAYLOAD


def test_part_longer_than_the_file_starts_again(server, tmp_path):
    dest = tmp_path / "a.bin"
    _part(dest).write_bytes(PAYLOAD + b"junk")
    fetch([server.base + "/a.bin"], dest, size=len(PAYLOAD), progress=False)
    assert server.requests == [("/a.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_existing_file_of_the_wrong_length_is_refused_untouched(server, tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"short")
    with pytest.raises(DownloadError) as info:
        fetch([server.base + "/a.bin"], dest, size=len(PAYLOAD), progress=False)
    assert str(info.value) == f"{dest} has 5 bytes, not the {len(PAYLOAD)} expected: move it away and run again"
    assert dest.read_bytes() == b"short" and server.requests == []
