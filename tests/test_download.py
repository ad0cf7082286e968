"""t2i.assets.download against a real HTTP server on loopback (no mocks of urllib)."""
from __future__ import annotations

import hashlib
import io
import random
import socket
from http.server import BaseHTTPRequestHandler

import pytest
import torch

from t2i.assets.download import DownloadError, fetch

from conftest import serve_http


def _torch_file(seed: int, n: int) -> bytes:
    """What weights mirrors serve: a real torch.save file (a zip whose directory sits at its end)."""
    buf = io.BytesIO()
    torch.save({"weight": torch.from_numpy(__import__("numpy").random.default_rng(seed).random(n, "float32"))}, buf)
    return buf.getvalue()


PAYLOAD = _torch_file(1234, 75_000)  # about 300 kB
OTHER = random.Random(99).randbytes(1_000)  # /other.bin: another file (an error page, another release)
DROP_AT = 123_457  # bytes sent before /drop/ closes the socket
DROP_ALWAYS_AT = 50_000  # per response on /dropalways/, so 3 tries stay short of the file
LIE_AT = 200_000  # /liar/ announces and sends only this much of the file: a complete-looking short body
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n"
CAP = 1_000_000  # the cap the tests pass for a file of unlisted length (the default is gigabytes)


class _Handler(BaseHTTPRequestHandler):
    """Paths: /a.bin (honours Range), /norange/a.bin (ignores it), /drop/a.bin (first
    response cut after DROP_AT bytes), /dropalways/a.bin (every response cut), /nolength/a.bin
    (no Content-Length, ignores Range, every response cut), /other.bin (OTHER), /srcnn.pth
    (server.srcnn); /liar/, /html/ and /endless/a.bin serve PAYLOAD only once server.fixed is set,
    before that a short body with a matching length, an HTML page, an endless chunked body; else 404."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            first = self.path not in srv.seen
            srv.seen.add(self.path)
        if self.path in ("/liar/a.bin", "/html/a.bin", "/endless/a.bin") and not srv.fixed:
            self._broken()
            return
        if self.path == "/other.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(OTHER)))
            self.end_headers()
            self.wfile.write(OTHER)
            return
        if self.path == "/srcnn.pth":
            self.send_response(200)
            self.send_header("Content-Length", str(len(srv.srcnn)))
            self.end_headers()
            self.wfile.write(srv.srcnn)
            return
        if self.path == "/nolength/a.bin":
            # HTTP/1.0 without a length: the body ends when the server closes, so a cut looks complete.
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[:DROP_ALWAYS_AT])
            return
        if self.path not in ("/a.bin", "/norange/a.bin", "/drop/a.bin", "/dropalways/a.bin",
                             "/liar/a.bin", "/html/a.bin", "/endless/a.bin"):
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

    def _broken(self):
        """The three ways a server without a listed length misleads, until `server.fixed` is set."""
        if self.path == "/liar/a.bin":  # a short body whose Content-Length agrees with it
            self.send_response(200)
            self.send_header("Content-Length", str(LIE_AT))
            self.end_headers()
            self.wfile.write(PAYLOAD[:LIE_AT])
        elif self.path == "/html/a.bin":  # an error page answered with 200
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(HTML)))
            self.end_headers()
            self.wfile.write(HTML)
        else:  # chunked, no length, no end: stops when the client hangs up
            self.protocol_version = "HTTP/1.1"
            self.close_connection = True
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = PAYLOAD[:65536]
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass


@pytest.fixture
def server(monkeypatch):
    yield from serve_http(_Handler, monkeypatch, requests=[], seen=set(), fixed=False, srcnn=b"")


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


# --- files without a listed length: the proof and the cap (issue 28, finding 5) -----------------------

def _refused(server, tmp_path, path, **kw):
    """fetch from one broken mirror: one line naming the file, nothing left at the real name or as .part."""
    dest = tmp_path / "w" / "a.bin"
    with pytest.raises(DownloadError) as info:
        fetch([server.base + path], dest, cap=CAP, progress=False, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("could not download a.bin from 1 mirror (last: ")
    assert not dest.exists() and not _part(dest).exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == []
    return dest, msg


def _fixed_rerun(server, dest, path, **kw):
    server.fixed = True
    server.requests.clear()
    fetch([server.base + path], dest, cap=CAP, progress=False, **kw)
    assert server.requests == [(path, None)]  # a clean start: nothing of the bad answer was kept to resume
    assert dest.read_bytes() == PAYLOAD


def test_short_body_with_a_lying_length_never_takes_the_name(server, tmp_path):
    # The server announces LIE_AT bytes and sends them: every length agrees, only the file's own
    # directory (at the end of a torch.save zip) shows that it was cut.
    dest, msg = _refused(server, tmp_path, "/liar/a.bin")
    assert f"a damaged or cut torch.save file" in msg and msg.endswith(f"from {server.base}/liar/a.bin)")
    assert [p for p, _ in server.requests] == ["/liar/a.bin"]  # refused as a whole: not retried, not resumed
    _fixed_rerun(server, dest, "/liar/a.bin")


def test_html_error_page_with_200_is_refused_in_one_line(server, tmp_path):
    dest, msg = _refused(server, tmp_path, "/html/a.bin")
    assert msg == (f"could not download a.bin from 1 mirror (last: an HTML page (an error or sign-in page?), "
                   f"not the file from {server.base}/html/a.bin)")
    _fixed_rerun(server, dest, "/html/a.bin")


def test_html_page_falls_through_to_the_next_mirror(server, tmp_path):
    dest = tmp_path / "a.bin"
    fetch([server.base + "/html/a.bin", server.base + "/a.bin"], dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == ["/html/a.bin", "/a.bin"]


def test_endless_body_stops_at_the_cap(server, tmp_path):
    dest, msg = _refused(server, tmp_path, "/endless/a.bin")
    assert f"more than {CAP} bytes sent for a file of unlisted length (the cap) from {server.base}/endless/a.bin" in msg
    _fixed_rerun(server, dest, "/endless/a.bin")


def test_endless_body_stops_at_the_listed_length(server, tmp_path):
    dest, msg = _refused(server, tmp_path, "/endless/a.bin", size=len(PAYLOAD))
    assert f"more than {len(PAYLOAD)} bytes sent, {len(PAYLOAD)} expected" in msg


def test_announced_length_over_the_cap_is_refused_before_a_byte(server, tmp_path):
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match=f"{len(PAYLOAD)} bytes offered, more than the 1000 a file of unlisted"):
        fetch([server.base + "/a.bin"], dest, cap=1000, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_default_cap_is_by_kind_of_file():
    from t2i.assets.proof import UNLISTED_CAPS, UNLISTED_WEIGHTS_CAP, unlisted_cap

    assert unlisted_cap("unet/diffusion_pytorch_model.bin") == UNLISTED_WEIGHTS_CAP > 3_490_000_000
    assert unlisted_cap("tokenizer/vocab.txt") == UNLISTED_CAPS[".txt"] < UNLISTED_WEIGHTS_CAP
    assert unlisted_cap("unet/config.JSON") == UNLISTED_CAPS[".json"]


def test_sha256_is_checked_when_known(server, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    dest, msg = _refused(server, tmp_path, "/a.bin", sha256="0" * 64)
    assert f"sha256 {good}, expected {'0' * 64}" in msg
    fetch([server.base + "/a.bin"], dest, sha256=good.upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD


# --- the proof of each kind of file, on real files ---------------------------------------------------

def _proof_of(tmp_path, name, data):
    from t2i.assets.proof import NotTheFile, prove

    path = tmp_path / name
    path.write_bytes(data)
    try:
        prove(path, name)
    except NotTheFile as e:
        assert "\n" not in str(e)
        return str(e)
    return None


def test_proof_by_format(tmp_path):
    from safetensors.torch import save as save_safetensors

    legacy = io.BytesIO()
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    st = save_safetensors({"w": torch.ones(1000)})
    assert _proof_of(tmp_path, "m.pth", PAYLOAD) is None
    assert _proof_of(tmp_path, "m.ckpt", legacy.getvalue()) is None
    assert _proof_of(tmp_path, "m.safetensors", st) is None
    assert _proof_of(tmp_path, "config.json", b'{"a": 1}') is None
    assert _proof_of(tmp_path, "vocab.txt", "wörter\n".encode()) is None
    assert _proof_of(tmp_path, "m.pt", b"\n  " + HTML).startswith("an HTML page")
    assert _proof_of(tmp_path, "config.json", HTML.upper()).startswith("an HTML page")
    assert _proof_of(tmp_path, "m.pt", b"\0" * 1000).startswith("not a torch.save file")
    assert _proof_of(tmp_path, "m.pt", PAYLOAD[:-100]).startswith("a damaged or cut torch.save file")
    assert _proof_of(tmp_path, "m.safetensors", st[:-4]).startswith("a cut or padded safetensors file")
    assert _proof_of(tmp_path, "m.safetensors", b"\xff" * 16).startswith("not a safetensors file")
    assert _proof_of(tmp_path, "config.json", b'{"a": ').startswith("not JSON")
    assert _proof_of(tmp_path, "vocab.txt", b"ok\xff").startswith("not UTF-8 text")
    assert _proof_of(tmp_path, "blob.dat", b"\0" * 10) is None  # a kind it does not know: only the HTML check


# --- install: a file that loads as no model is not kept either ---------------------------------------

def test_download_failing_its_loading_proof_is_not_kept(server, tmp_path, monkeypatch):
    # /a.bin is a real torch.save file, but of no SRCNN: it passes the download's proof and fails the
    # loader's. Kept at the real name, it would count as present and a second run would not fetch it.
    import yaml

    from t2i.assets import install
    from t2i.errors import BrokenWeights
    from t2i.upscale.srcnn import SRCNN

    registry = tmp_path / "weights.yaml"
    registry.write_text(yaml.safe_dump({"test-srcnn-x2": {"kind": "srcnn", "files": {
        "upscale/srcnn_x2.pth": {"urls": [server.base + "/srcnn.pth"], "size": None}}}}))
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "ck"))
    server.srcnn = PAYLOAD
    with pytest.raises(BrokenWeights) as info:
        install.download("test-srcnn-x2", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "srcnn_x2.pth" in msg
    assert msg.endswith("; removed the 1 file just downloaded (run again to fetch anew)")
    assert not (tmp_path / "ck/upscale/srcnn_x2.pth").exists()
    buf = io.BytesIO()
    torch.save(SRCNN().state_dict(), buf)
    server.srcnn = buf.getvalue()  # the mirror fixed: the same command now succeeds
    assert install.download("test-srcnn-x2", progress=False) == ["test-srcnn-x2: 1 files present and loaded"]
    assert (tmp_path / "ck/upscale/srcnn_x2.pth").read_bytes() == server.srcnn


# --- loading stays weights_only=True, and no message advises otherwise ------------------------------

@pytest.mark.parametrize("content", ["html", "global"])
def test_no_loader_advises_weights_only_false(tmp_path, content):
    # torch's safe loader answers an HTML page or a pickled object it refuses with paragraphs whose
    # first line advises re-running with weights_only=False; every loader's one line gives the reason only.
    from fractions import Fraction

    from t2i.engine.gan_int_cls import read_state
    from t2i.engine.vqgan import _torch_load
    from t2i.errors import BrokenWeights
    from t2i.families.glide.load import load as load_glide
    from t2i.upscale.esrgan import load_esrgan
    from t2i.upscale.srcnn import load_srcnn

    path = tmp_path / "weights.pth"
    if content == "html":
        path.write_bytes(HTML)
    else:
        torch.save({"state_dict": {}, "hparams": Fraction(1, 3)}, path)
    reason = "Unsupported global: GLOBAL fractions.Fraction" if content == "global" else "Unsupported operand 60"
    for load in (_torch_load, read_state, load_srcnn, lambda p: load_glide(p, "base"), load_esrgan):
        with pytest.raises(BrokenWeights) as info:
            load(path)
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg and "weights_only" not in msg, msg
        if load is not load_esrgan:  # spandrel unpickles with its own restricted loader, in its own words
            assert f"the safe loader refuses it: {reason}" in msg, msg


def test_no_code_in_the_tree_loads_with_weights_only_false():
    from t2i.paths import ROOT

    found = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "t2i").rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line]
    assert found == []


def test_a_registry_sha256_is_checked_before_the_file_takes_its_name(server, tmp_path, monkeypatch):
    import yaml

    from t2i.assets import install, weights
    from t2i.errors import PresetError

    good = hashlib.sha256(PAYLOAD).hexdigest()
    registry = tmp_path / "weights.yaml"

    def entry(sha):
        registry.write_text(yaml.safe_dump({"hashed": {"kind": "srcnn", "files": {
            "upscale/a.pth": {"urls": [server.base + "/a.bin"], "size": None, "sha256": sha}}}}))

    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path / "ck"))
    entry("f" * 64)
    with pytest.raises(DownloadError, match=f"sha256 {good}, expected {'f' * 64} from"):
        install.download("hashed", progress=False, verify=False)
    assert not (tmp_path / "ck/upscale/a.pth").exists() and not (tmp_path / "ck/upscale/a.pth.part").exists()
    entry(good.upper())
    assert install.download("hashed", progress=False, verify=False) == ["hashed: 1 files present"]
    assert (tmp_path / "ck/upscale/a.pth").read_bytes() == PAYLOAD
    entry("abc")
    with pytest.raises(PresetError, match="file upscale/a.pth: sha256 must be 64 hex digits"):
        weights.entry("hashed")
    from t2i.paths import CONFIG_DIR

    real = weights.registry(CONFIG_DIR / "weights.yaml")["realesrgan-x4plus"].files["upscale/RealESRGAN_x4plus.pth"]
    assert real.sha256 == "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"
