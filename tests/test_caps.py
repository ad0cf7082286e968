"""What a job really makes (t2i/service/caps.py) and what a visitor may read (t2i/service/visitor_text.py):
the final image's size (the grid of samples at the size the preset draws, times the upscalers'
factors) is capped at submit; a preset that draws at its own size says so; an upscaler without its
file is refused at submit with the download line; no server path reaches a job's error field or the
Generate page. Real presets, real tiny ESRGAN files, real SQLite stores, the real executor, the CLI
and the page through AppTest."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image
from spandrel.architectures.ESRGAN import ESRGAN

from t2i import upscale
from t2i.errors import SpecError, WeightsMissing
from t2i.paths import ROOT
from t2i.presets import get_preset
from t2i.service import caps
from t2i.service.executor import Executor, ExecutorConfig
from t2i.service.queue import submit_job
from t2i.service.visitor_text import for_visitor
from t2i.spec import MAX_UPSCALED_SIDE, make_spec
from t2i.store import open_store

GAN = "tiny-gan-untrained"          # draws 64x64 whatever is asked
DIFFUSION = "tiny-diffusion-untrained"
GUIDED = "tiny-vqgan-untrained"
REGISTRY = """
tiny-x2: {kind: esrgan, files: {upscale/tiny_x2.pth: []}}
tiny-x4: {kind: esrgan, files: {upscale/tiny_x4.pth: []}}
absent-x4: {kind: esrgan, files: {upscale/absent_x4.pth: []}}
made-here-x2: {kind: srcnn, builtin: true, files: {not-trained-yet/srcnn_x2.pth: []}}
"""


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """Tiny ESRGAN x2 and x4 files (spandrel's own class, one block) and an entry without its file."""
    registry, checkpoints = tmp_path / "weights.yaml", tmp_path / "checkpoints"
    # The repository's entries too: presets' weights resolve through them (the page lists presets).
    registry.write_text((ROOT / "configs" / "weights.yaml").read_text() + REGISTRY)
    (checkpoints / "upscale").mkdir(parents=True)
    for scale in (2, 4):
        torch.manual_seed(scale)
        net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
        torch.save({k: v.clone() for k, v in net.state_dict().items()}, checkpoints / f"upscale/tiny_x{scale}.pth")
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(checkpoints))
    upscale.clear()
    yield checkpoints
    upscale.clear()


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 't2i.db'}")
    yield s
    s.close()


def spec(name, **fields):
    p = get_preset(name)
    return make_spec("a red circle", name, family=p.family, defaults=p.defaults, post=p.post, **fields), p


def one_line(error, *parts) -> str:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


# --- the final image's size ----------------------------------------------------------------------------

def test_a_grid_of_samples_through_upscalers_is_refused_at_submit_with_what_it_would_make(weights, store):
    """The 8480x8480 job the hostile pass had accepted: 64 GAN samples of 64x64 (a 530x530 grid), x16."""
    with pytest.raises(SpecError) as e:
        submit_job(store, "a red circle", GAN, num_samples=64, upscale="tiny-x4,tiny-x4", steps=2)
    one_line(e.value, "upscale:", "64 samples of 64x64", "530x530", "would make 8480x8480",
             f"{MAX_UPSCALED_SIDE} pixels a side", "at most 9 samples", "fewer upscalers")
    assert sum(store.counts().values()) == 0
    # The largest grid that fits is accepted: 9 samples (198x198) x16 = 3168.
    job = submit_job(store, "a red circle", GAN, num_samples=9, upscale="tiny-x4,tiny-x4", steps=2)
    assert store.get(job).status == "queued"


def test_the_cap_counts_the_grid_of_a_variable_size_preset(weights, store):
    """The 4256x4256 PNG of the hostile pass: 9 samples of 352x352 through one x4 (352 x4 = 1408 passed)."""
    made, p = spec(DIFFUSION, num_samples=9, width=352, height=352, upscale="tiny-x4")
    assert caps.made_size(made, p) == (4256, 4256)
    with pytest.raises(SpecError) as e:
        submit_job(store, "a red circle", DIFFUSION, num_samples=9, width=352, height=352, upscale="tiny-x4")
    one_line(e.value, "would make 4256x4256", "ask for at most 338x338", "at most 4 samples")
    # Without upscalers the grid alone is capped too: 16 samples of 1024x1024 are 4106 pixels a side.
    with pytest.raises(SpecError) as e:
        submit_job(store, "a red circle", DIFFUSION, num_samples=16, width=1024, height=1024, steps=1)
    one_line(e.value, "num_samples:", "would make 4106x4106")
    assert sum(store.counts().values()) == 0


def test_the_cap_is_on_the_size_the_preset_draws_not_the_asked_one(weights, store):
    """A GAN asked for 512x512 draws 64x64: two x4 upscalers make 1024x1024, which is allowed (the asked
    size was refused as 8192x8192 before), and the job says the asked size is ignored."""
    made, p = spec(GAN, width=512, height=512, upscale="tiny-x4,tiny-x4")
    assert caps.made_size(made, p) == (1024, 1024)
    assert caps.ignored_size(made, p) == f"{GAN} draws 64x64; the asked 512x512 is ignored"
    assert caps.asked_size_note(p, "512", "512") == caps.ignored_size(made, p)
    assert caps.asked_size_note(p, None, "") is None          # the default is the size it draws
    assert caps.asked_size_note(get_preset(GUIDED), 512, 512) is None  # it draws what is asked
    job = submit_job(store, "a red circle", GAN, width=512, height=512, upscale="tiny-x4,tiny-x4", steps=2)
    assert store.get(job).spec["upscale"] == ["tiny-x4", "tiny-x4"]
    # A guided job's size is rounded to the codec's factor: 65x64 through three x4 is 4096x4096.
    made, p = spec(GUIDED, width=65, height=64, upscale="tiny-x4,tiny-x4,tiny-x4")
    assert caps.made_size(made, p) == (4096, 4096)


def test_the_made_size_is_the_size_of_the_png_the_executor_stores(weights, tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    store = open_store(url)
    try:
        job = submit_job(store, "a red circle", GAN, num_samples=4, upscale="tiny-x2", steps=2, seed=1)
        ex = Executor(ExecutorConfig(db=url, once=True))
        try:
            assert ex.run() == 0
        finally:
            ex.close()
        assert store.get(job).status == "done", store.get(job).error
        made, p = spec(GAN, num_samples=4, upscale="tiny-x2", steps=2)
        assert Image.open(io.BytesIO(store.result(job).png)).size == caps.made_size(made, p) == (268, 268)
    finally:
        store.close()


# --- upscalers without weights, and paths ------------------------------------------------------------------

def test_an_upscaler_without_its_file_is_refused_at_submit_with_the_download_line(weights, store):
    with pytest.raises(WeightsMissing) as e:
        submit_job(store, "a red circle", GUIDED, upscale="absent-x4", iterations=2, cutn=2, width=64, height=64)
    message = one_line(e.value, "absent-x4", "`python -m t2i download absent-x4`")
    assert str(weights) not in message and "/" not in message.replace("`python -m t2i download absent-x4`", "")
    assert sum(store.counts().values()) == 0
    # One trained here (committed under checkpoints/) is made by train-demo, not downloaded.
    with pytest.raises(WeightsMissing) as e:
        submit_job(store, "a red circle", GUIDED, upscale="made-here-x2", iterations=2, cutn=2, width=64, height=64)
    one_line(e.value, "made-here-x2", "`python -m t2i train-demo`")
    # A file of the wrong length is not the file either.
    (weights / "upscale" / "absent_x4.pth").write_bytes(b"")
    registry = weights.parent / "weights.yaml"
    registry.write_text(registry.read_text().replace("absent_x4.pth: []", "absent_x4.pth: {size: 9}"))
    with pytest.raises(WeightsMissing):
        submit_job(store, "a red circle", GUIDED, upscale="absent-x4", iterations=2, cutn=2, width=64, height=64)


def test_a_job_whose_upscaler_went_missing_fails_without_the_servers_path(weights, tmp_path, caplog):
    """The file is removed between submit and run: the job's error (which visitors read in the
    gallery) names the file but not where it lives; the operator's log has the path."""
    url = f"sqlite:///{tmp_path / 'run.db'}"
    store = open_store(url)
    try:
        job = submit_job(store, "a red circle", GUIDED, upscale="tiny-x2", iterations=2, cutn=2, width=64,
                         height=64, seed=1)
        (weights / "upscale" / "tiny_x2.pth").unlink()
        ex = Executor(ExecutorConfig(db=url, once=True))
        with caplog.at_level(logging.INFO):
            try:
                assert ex.run() == 0
            finally:
                ex.close()
        failed = store.get(job)
        assert failed.status == "failed"
        one_line(failed.error, "tiny_x2.pth", "python -m t2i download tiny-x2")
        assert str(tmp_path) not in failed.error and "/upscale/" not in failed.error
        assert str(weights / "upscale" / "tiny_x2.pth") in caplog.text
    finally:
        store.close()


@pytest.mark.parametrize("text, shown", [
    ("SRCNN weights /srv/t2i/checkpoints/upscale/srcnn_x4.pth are missing: run `python -m t2i download srcnn-x4`",
     "SRCNN weights \u2026/srcnn_x4.pth are missing: run `python -m t2i download srcnn-x4`"),
    ("internal error (FileNotFoundError: [Errno 2] No such file or directory: '/home/al/t2i/x.db')",
     "internal error (FileNotFoundError: [Errno 2] No such file or directory: '\u2026/x.db')"),
    ("preset p needs ~/t2i/checkpoints/a.ckpt and 2 more", "preset p needs \u2026/a.ckpt and 2 more"),
    ("see https://example.org/a/b, 1/2 of configs/x.yaml", "see https://example.org/a/b, 1/2 of configs/x.yaml"),
    ("lower cutn / size", "lower cutn / size"),
])
def test_text_for_visitors_has_no_server_paths(text, shown, caplog):
    with caplog.at_level(logging.WARNING, logger="t2i.visitor_text"):
        assert for_visitor(text) == shown
    assert (text in caplog.text) == (text != shown)  # the whole line is the operator's, in the log


def test_cutting_paths_from_a_megabyte_of_hostile_text_is_linear():
    """Slashes without a second part, and parts without an end: each start is tried once. (No timing
    assert: a backtracking pattern would take hours here, not a moment.)"""
    for text in (" /" + "a" * 2**20, "/a" * 2**19, " /" * 2**19, "/a/" * 2**18):
        shown = for_visitor(text)
        assert "/a/" not in shown and len(shown) <= 2000


# --- the CLI and the page ---------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_the_cli_says_when_a_preset_ignores_the_asked_size_and_refuses_a_too_large_grid(weights, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    db = f"sqlite:///{tmp_path / 'cli.db'}"  # one database per process: --create races otherwise
    base = ["a red circle", "--preset", GAN, "--steps", "2", "--seed", "1"]
    runs = {
        "generate": ["generate", *base, "--size", "512", "512", "--device", "cpu", "--quiet", "--out",
                     str(tmp_path / "out")],
        "submit": ["submit", *base, "--size", "512", "512", "--db", db, "--create"],
        "too-large": ["submit", *base, "--num-samples", "64", "--upscale", "tiny-x4,tiny-x4", "--db",
                      f"sqlite:///{tmp_path / 'refused.db'}", "--create"],
    }

    def cli(args):
        return subprocess.run([sys.executable, "-m", "t2i", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    with ThreadPoolExecutor(3) as pool:
        done = dict(zip(runs, pool.map(cli, runs.values())))
    note = f"note: {GAN} draws 64x64; the asked 512x512 is ignored"
    assert done["generate"].returncode == 0, done["generate"].stderr
    assert note in done["generate"].stderr
    assert done["submit"].returncode == 0, done["submit"].stderr
    assert done["submit"].stdout.splitlines()[1:] == [note]
    refused = done["too-large"]
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "would make 8480x8480" in refused.stderr


@pytest.mark.slow
def test_the_generate_page_says_the_size_is_ignored_and_refuses_a_missing_upscaler_without_its_path(
        weights, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from t2i.web.visitor import COOKIE

    class Client:  # what a browser's handshake gives a session (AppTest has no HTTP layer): see test_pages.py
        cookies, headers, remote_ip = {COOKIE: "k" * 43}, [], "192.0.2.10"
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: Client())
    url = f"sqlite:///{tmp_path / 'page.db'}"
    monkeypatch.setenv("T2I_DB", url)
    store = open_store(url)
    try:
        at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
        at.run()
        at.selectbox(key="preset").select(GAN).run()
        at.text_area(key="prompt").input("a red circle")
        at.text_input(key="width").input("512")
        at.text_input(key="height").input("512")
        at.text_input(key="steps").input("2")
        next(b for b in at.button if b.label == "Generate").click().run()
        assert not at.exception, at.exception
        assert store.counts()["queued"] == 1
        assert f"{GAN} draws 64x64; the asked 512x512 is ignored" in [i.value for i in at.info]

        at.selectbox(key="upscale").select("absent-x4")
        next(b for b in at.button if b.label == "Generate").click().run()
        assert not at.exception, at.exception
        assert store.counts()["queued"] == 1
        shown = " ".join(t.value for t in at.text)
        assert "python -m t2i download absent-x4" in shown and str(weights) not in shown
    finally:
        store.close()
