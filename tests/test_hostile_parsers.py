"""Everything a visitor brings is parsed in bounded time and memory (issue 28, findings 1 to 3).

Each parser gets a megabyte of its worst input and must return the expected (cut, refused or parsed)
result. No timing is asserted: a SIGALRM guard turns a parser gone quadratic again (a megabyte: hours)
into a failure instead of a hung run. Memory is measured in a fresh process (its peak RSS,
VmHWM), where nothing else has raised the high-water mark.
"""

import io
import json
import signal
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from contextlib import contextmanager

import pytest
from PIL import Image, PngImagePlugin

from t2i.output import render
from t2i.output.infotext import parse_infotext
from t2i.paths import ROOT
from t2i.presets import get_preset
from t2i.service import guide
from t2i.service.refill import form_values
from t2i.spec import MAX_PROMPT_CHARS

MB = 2**20
SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the PNG format's
GUARD_S = 60  # far past a linear parse of a megabyte on a loaded 2-core machine, far short of a quadratic one


class Unbounded(BaseException):
    """Not an Exception: a parser's own `except Exception` (the old cookie reader had one) must not
    swallow it and go on to the next megabyte unguarded."""


@contextmanager
def bounded(seconds: int = GUARD_S):
    """Fail (not hang) when the body runs past `seconds`: a bound on the work, not a timing."""
    def stop(*_):
        raise Unbounded(f"still parsing after {seconds} s: no longer linear")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(*chunks: bytes, size=(1, 1), idat: bytes | None = None) -> bytes:
    """A greyscale PNG of `size` whose chunks follow its pixel data (where Pillow's `.info` does not look)."""
    w, h = size
    if idat is None:
        idat = zlib.compress(bytes(1 + w) * h)
    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + b"".join(chunks) + chunk(b"IEND", b""))


def text(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


# --- finding 1: linear parsers, bounded input --------------------------------------------------

WORST_LINES = {
    # A1111's regex rescanned a colon-less run of key characters from each of its positions.
    "no colon": ("a" * MB, {}),
    "words and spaces": ("ab " * (MB // 3), {}),
    "unclosed quotes": ('Steps: "' + "x, " * (MB // 3), {}),
    "backslashes": ('Seed: "' + "\\" * MB, {}),
    "colons": (":" * MB, {}),
    "many pairs": ("Steps: 20, " * (MB // 11) + "Seed: 7", {"Steps": "20", "Seed": "7", "seed": 7}),
}


@pytest.mark.parametrize("name", list(WORST_LINES))
def test_infotext_parses_a_megabyte_of_its_worst_line(name):
    line, expected = WORST_LINES[name]
    with bounded():
        out = parse_infotext("a prompt\n" + line)
    for key, value in expected.items():
        assert out[key] == value
    if not expected:  # not pairs: the line is part of the prompt, as A1111 reads it
        assert out["prompt"] == ("a prompt\n" + line).strip() and "Steps" not in out and "Seed" not in out


def test_infotext_values_past_the_int_and_nesting_limits_stay_text():
    digits, nested = "9" * 5000 + "x64", "[" * 100_000
    with bounded():
        out = parse_infotext(f"p\nSteps: 1, Sampler: DDIM, Size: {digits}, cutn: {nested}")
    assert "width" not in out and out["Size"] == digits
    assert out["cutn"] == nested


def test_the_json_record_nested_past_the_interpreters_depth_falls_back_to_the_infotext():
    infotext = "a fox\nSteps: 3, Seed: 4, Size: 64x64"
    png = png_with(text(render.JSON_KEY, "[" * 60_000), text(render.PARAMETERS_KEY, infotext))
    with bounded():
        read = render.read_parameters(png)
    assert (read["prompt"], read["seed"], read["width"]) == ("a fox", 4, 64)


@pytest.mark.parametrize("key", [render.JSON_KEY, render.PARAMETERS_KEY])
def test_a_megabyte_of_png_text_is_refused_in_one_line_unread(key):
    png = png_with(text(key, "a" * MB))
    tracemalloc.start()
    try:
        with bounded(), pytest.raises(render.PngTextError) as refused:
            render.read_parameters(png)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refused.value) == f"This PNG's `{key}` text is over 64 KB (ours hold a few KB): not read."
    assert peak < MB // 4  # the chunk was never copied out of the file, let alone parsed


def test_a_prompt_from_a_png_is_cut_to_the_prompt_limit():
    prompt = "a lighthouse " * (MB // 13)
    with bounded():
        filled = form_values({"prompt": prompt, "seed": 3}, ["shapes"], "shapes")
    assert filled.values["prompt"] == prompt[:MAX_PROMPT_CHARS].rstrip()
    assert filled.prompt_length >= len(prompt.strip()) and filled.values["seed"] == "3"


def test_unknown_words_of_a_megabyte_of_distinct_words_are_those_a_submit_keeps():
    words = " ".join(f"zq{i}" for i in range(MB // 8))
    with bounded():
        unknown = guide.unknown_words(get_preset("shapes"), words)
    assert unknown == words[:MAX_PROMPT_CHARS].split()


def test_a_cookie_header_of_a_megabyte_of_backslashes_is_no_key():
    """The visitor cookie's middleware runs on the server's event loop: http.cookies (quadratic in
    backslashes, CVE-2024-7592) held every session while it parsed."""
    from t2i.web.visitor import COOKIE, _request_cookie

    key, slashes = "k" * 43, "\\" * MB
    with bounded():
        assert _request_cookie([(b"cookie", f'{COOKIE}="{slashes}"'.encode())]) is None
        assert _request_cookie([(b"cookie", f'a="{slashes}"; {COOKIE}={key}; b=1'.encode())]) == key
    assert _request_cookie([(b"Cookie", f"{COOKIE}=short".encode()), (b"cookie", f" {COOKIE} = {key}".encode())]) == key


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_the_server_behind_the_visitor_middleware_never_parses_a_backslashed_cookie(kind):
    """Starlette's cookie parser (Streamlit's server reads every request's and the WebSocket's cookies
    with it) is quadratic in backslashes too: a 60 KB Cookie header held the health check 50 s."""
    import asyncio

    from starlette.requests import HTTPConnection

    from t2i.web.visitor import COOKIE, VisitorCookie

    seen = {}

    async def server(scope, receive, send):
        seen.update(HTTPConnection(scope).cookies)

    key, slashes = "k" * 43, "\\" * MB
    scope = {"type": kind, "headers": [(b"cookie", f'a="{slashes}"; {COOKIE}={key}; b=1'.encode())]}
    with bounded():
        asyncio.run(VisitorCookie(server)(scope, None, None))
    assert seen == {COOKIE: key, "b": "1"}


# --- finding 2: a PNG's text without its pixels -------------------------------------------------

READ_BIG_PNG = textwrap.dedent("""
    import json, re, struct, sys, tracemalloc, zlib
    from t2i.output import render

    def peak_kb():  # this process's own peak RSS (ru_maxrss carries the forking parent's peak over exec)
        with open("/proc/self/status") as status:
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read())[1])

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = int(sys.argv[1])
    deflate, row, idat = zlib.compressobj(9), bytes(1 + side), []
    for _ in range(side):  # zero rows, one at a time: the pixels are never held, here either
        idat.append(deflate.compress(row))
    idat.append(deflate.flush())
    record = json.dumps({"prompt": "a very large field", "seed": 5, "size": [side, side]})
    png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", b"".join(idat)) + chunk(b"iTXt", b"t2i\\0\\0\\0\\0\\0" + record.encode())
           + chunk(b"IEND", b""))
    before = peak_kb()
    tracemalloc.start()
    params = render.read_parameters(png)
    peak = tracemalloc.get_traced_memory()[1]
    grown = peak_kb() - before
    print(json.dumps({"params": params, "file": len(png), "peak": peak, "grown_kb": grown}))
""")


@pytest.mark.subprocess
def test_a_12000x12000_png_yields_its_parameters_without_decoding_a_pixel():
    done = subprocess.run([sys.executable, "-c", READ_BIG_PNG, "12000"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["params"] == {"prompt": "a very large field", "seed": 5, "size": [12000, 12000]}
    # Decoding would take 144 MB (one byte a pixel); before issue 28 the process grew by 160 MB.
    assert out["grown_kb"] < 16 * 1024 and out["peak"] < 64 * 1024, out


def test_a_pixel_bomb_still_yields_its_parameters():
    """A 100000x100000 image: Pillow refuses it as a decompression bomb on open, before any text."""
    png = png_with(chunk(b"iTXt", b"t2i\0\0\0\0\0" + json.dumps({"prompt": "huge"}).encode()),
                   size=(100_000, 100_000), idat=zlib.compress(bytes(1000)))
    assert render.read_parameters(png) == {"prompt": "huge"}


@pytest.mark.parametrize("kind", ["zTXt", "iTXt"])
def test_a_text_bomb_is_one_line_and_never_inflated_whole(kind):
    deflate, block = zlib.compressobj(9), b"{" * MB
    bomb = b"".join([deflate.compress(block) for _ in range(64)] + [deflate.flush()])  # 64 MB inflated
    head = b"t2i\0\0" if kind == "zTXt" else b"t2i\0\1\0\0\0"
    png = png_with(chunk(kind.encode(), head + bomb))
    tracemalloc.start()
    try:
        with pytest.raises(render.PngTextError) as refused:
            render.read_parameters(png)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(refused.value) and "over 64 KB" in str(refused.value)
    assert peak < MB  # at most the 64 KB budget was inflated


def test_compressed_text_within_the_cap_reads_as_pillow_writes_it():
    info = PngImagePlugin.PngInfo()
    info.add_itxt(render.JSON_KEY, json.dumps({"prompt": "狐 in the snow", "seed": 1}), zip=True)
    info.add_text(render.PARAMETERS_KEY, "unused", zip=True)
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="PNG", pnginfo=info)
    assert render.png_text(out.getvalue())[render.PARAMETERS_KEY] == "unused"
    assert render.read_parameters(out.getvalue()) == {"prompt": "狐 in the snow", "seed": 1}


def test_a_damaged_or_cut_short_text_chunk_reads_as_absent():
    good = text(render.PARAMETERS_KEY, "a fox\nSteps: 3, Seed: 4, Size: 64x64")
    damaged = good[:-1] + bytes([good[-1] ^ 1])  # its CRC no longer matches
    assert render.read_parameters(png_with(damaged)) is None
    assert render.read_parameters(png_with(good)[:-12]) == render.read_parameters(png_with(good))  # no IEND
    assert render.read_parameters(png_with(good)[:-20]) is None  # the text chunk cut short


# --- finding 3: wrongly typed fields in an opened PNG -------------------------------------------

BASE = {"prompt": "a red circle", "preset": "shapes", "seed": 7, "requested_size": [64, 64]}
HOSTILE = {
    "upscale": ({"upscale": 5}, {"upscale"}),
    "size": ({"requested_size": None, "size": 5}, {"size"}),
    "width": ({"requested_size": None, "width": "x", "height": 64}, {"width"}),
    "surrogate prompt": ({"prompt": "a red \ud800 circle"}, {"prompt"}),
    "surrogate preset": ({"preset": "shap\udcffes"}, {"preset"}),
    "nested preset": ({"preset": {"name": "shapes"}}, {"preset"}),
    "nested prompt": ({"prompt": ["a", {"b": 1}]}, {"prompt"}),
    "bool seed": ({"seed": True}, {"seed"}),
    "float seed": ({"seed": 1.5}, {"seed"}),
    "options": ({"cutn": float("nan"), "iterations": "many", "lr": {}}, {"cutn", "iterations"}),  # no lr field here
    "family object": ({"family": {"x": 1}}, {"family"}),
    "bad size sides": ({"requested_size": [64, {"x": 1}]}, {"requested_size"}),
    "upscale list of objects": ({"upscale": [{"x": 1}, "a,b"]}, {"upscale"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_wrongly_typed_field_is_left_out_and_named(name):
    change, named = HOSTILE[name]
    filled = form_values({**BASE, **change}, ["shapes", "tiny-vqgan-untrained"], "shapes")
    assert set(filled.left_out) == named
    for field in named:
        assert f"{field} (" in filled.note() and "\n" not in filled.note()
    for key, value in {"prompt": "a red circle", "seed": "7", "preset": "shapes"}.items():
        if key not in change:  # the other fields still fill the form
            assert filled.values[key] == value
    json.dumps(filled.values, ensure_ascii=False).encode("utf-8")  # all of it can go to the browser


def test_a_guided_records_options_of_the_wrong_type_are_named():
    record = {"prompt": "a cat", "preset": "tiny-vqgan-untrained", "family": "guided", "iterations": "7",
              "cutn": [3], "upscale": ["none-such"]}
    filled = form_values(record, ["shapes", "tiny-vqgan-untrained"], "shapes")
    assert set(filled.left_out) == {"iterations", "cutn"}
    assert filled.values == {"prompt": "a cat", "preset": "tiny-vqgan-untrained", "upscale": "none-such"}


def test_any_json_value_in_any_field_never_raises():
    values = [None, True, 0, -1, 1.5, float("inf"), "", "x", "\ud800", [], [1], [1, 2], ["a", "b"], {}, {"a": 1}]
    keys = ["prompt", "negative", "Negative prompt", "preset", "family", "seed", "size", "requested_size",
            "width", "height", "upscale", "steps", "sampler", "guidance", "iterations", "cutn", "lr"]
    for key in keys:
        for value in values:
            filled = form_values({"prompt": "p", key: value}, ["shapes", "tiny-vqgan-untrained"], None)
            assert set(filled.values) <= {"prompt", "preset", "seed", "width", "height", "upscale", "steps",
                                          "sampler", "guidance", "eta", "num_samples", "iterations", "cutn", "lr"}
            assert all(isinstance(v, str) for v in filled.values.values())


@pytest.mark.slow
def test_the_generate_page_survives_a_png_of_wrongly_typed_fields(tmp_path, monkeypatch):
    """The page itself: before issue 28, `upscale: 5` raised in the upload's callback."""
    from streamlit.testing.v1 import AppTest

    class Client:  # what tests/test_pages.py's fixture gives a session: no cookie, a public address
        cookies, headers, remote_ip = {}, [], "192.0.2.77"

    monkeypatch.setenv("T2I_DB", f"sqlite:///{tmp_path / 't2i.db'}")
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: Client)
    record = {**BASE, "preset": "tiny-vqgan-untrained", "family": "guided", "upscale": 5, "size": 5,
              "requested_size": None, "iterations": "\ud800", "cutn": 3}
    info = PngImagePlugin.PngInfo()
    info.add_itxt(render.JSON_KEY, json.dumps(record))
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="PNG", pnginfo=info)
    at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
    at.run()
    at.toggle(key="open_png_on").set_value(True).run()
    at.file_uploader(key="open_png").set_value(("hostile.png", out.getvalue(), "image/png")).run()
    assert not at.exception, at.exception
    assert at.text_area(key="prompt").value == "a red circle"
    assert at.text_input(key="cutn").value == "3"
    assert [w.value for w in at.warning] == ["Left out of the PNG's parameters: size (not two whole numbers); "
                                             "iterations (not a whole number); upscale (not a list of upscaler "
                                             "names)."]
    big = png_with(text(render.PARAMETERS_KEY, "a" * MB))
    at.file_uploader(key="open_png").set_value(("big.png", big, "image/png")).run()
    assert not at.exception and [e.value for e in at.error] == [
        "This PNG's `parameters` text is over 64 KB (ours hold a few KB): not read."]

