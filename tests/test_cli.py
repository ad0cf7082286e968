"""`python -m t2i ...` end to end, as real subprocesses, with the untrained tiny preset.

Every process pays ~5-10 s of imports (torch, open_clip, taming), so all invocations are started
together by one module-scoped fixture and run concurrently; the tests then check their results. Bad
input is refused before any work: two such processes show the exit codes a shell sees, the other
cases go through the same `main` in this process.
"""

import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

import t2i
from t2i.output.render import read_parameters

ROOT = Path(__file__).resolve().parent.parent
TINY = "tiny-vqgan-untrained"
TRAINED = "vqgan_imagenet_f16_16384"
GENERATE = ["generate", "a red circle", "--preset", TINY, "--iterations", "6", "--save-every", "2",
            "--seed", "5", "--device", "cpu", "--quiet"]


@dataclass
class Run:
    args: list
    out: Path          # the --out directory (may not exist)
    checkpoints: Path  # this run's own, initially empty, T2I_CHECKPOINTS
    returncode: int = None
    stdout: str = ""
    stderr: str = ""


def _bad(*args, prompt="a red circle", preset=TINY):
    return ["generate", prompt, "--preset", preset, *args, "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "notes.png"  # an image name, text inside
    path.write_text("this is not an image\n")
    return path


BAD_INPUTS = {
    "iterations-0": lambda tf: _bad("--iterations", "0"),
    "iterations-abc": lambda tf: _bad("--iterations", "abc"),
    "size-10": lambda tf: _bad("--size", "10", "10"),
    "cutn-999": lambda tf: _bad("--cutn", "999"),
    "seed-negative": lambda tf: _bad("--seed", "-1"),
    "empty-prompt": lambda tf: _bad(prompt=""),
    "nine-parts": lambda tf: _bad(prompt="|".join(f"p{i}" for i in range(9))),
    "unknown-preset": lambda tf: _bad(preset="nope"),
    "init-text-file": lambda tf: _bad("--init-image", str(tf)),
    "init-missing": lambda tf: _bad("--init-image", str(tf.parent / "missing.png")),
}
# Run as real processes (exit codes 2 and 1 as a shell sees them); the rest run in this process.
BAD_PROCESSES = ("iterations-abc", "unknown-preset")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_file):
    base = tmp_path_factory.mktemp("cli")
    jobs = {
        "generate": GENERATE,
        "generate-again": GENERATE,
        "size-70": [*GENERATE, "--size", "70", "70"],
        "trained-missing": ["generate", "a red circle", "--preset", TRAINED, "--device", "cpu", "--quiet"],
        "presets": ["presets"],
        **{name: BAD_INPUTS[name](text_file) for name in BAD_PROCESSES},
    }
    runs = {}
    for name, args in jobs.items():
        out, ckpt = base / name / "out", base / name / "checkpoints"
        ckpt.mkdir(parents=True)
        if args[0] == "generate":
            args = [*args, "--out", str(out)]
        runs[name] = Run(args, out, ckpt)

    def execute(run):
        env = dict(os.environ, T2I_CHECKPOINTS=str(run.checkpoints))
        # One intra-op thread per process: many run at once (and the result must not depend on it).
        env.setdefault("OMP_NUM_THREADS", "1")
        # Belt and braces: nothing here may reach the network.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HTTP_PROXY="http://127.0.0.1:9",
                   HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
                   https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
        proc = subprocess.run([sys.executable, "-m", "t2i", *run.args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        run.returncode, run.stdout, run.stderr = proc.returncode, proc.stdout, proc.stderr

    # The long runs first, so the short ones fill in around them.
    order = sorted(runs.values(), key=lambda r: "--save-every" not in r.args)
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(execute, order))
    return runs


def _files(directory: Path):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- a successful run -------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_generate_succeeds(runs):
    r = runs["generate"]
    assert r.returncode == 0, r.stderr
    files = _files(r.out)
    assert len(files) == 2, files
    assert [f for f in files if f.endswith(".png")] and [f for f in files if f.endswith(".gif")], files
    assert not [f for f in files if f.startswith(".")], "temporary files left behind"


@pytest.mark.subprocess
def test_generate_stdout_names_seed_and_paths(runs):
    r = runs["generate"]
    assert r.returncode == 0, r.stderr
    (png,) = r.out.glob("*.png")
    (gif,) = r.out.glob("*.gif")
    assert re.search(r"\bseed 5\b", r.stdout), r.stdout
    assert str(png) in r.stdout and str(gif) in r.stdout, r.stdout
    assert "size 64x64" in r.stdout


@pytest.mark.subprocess
def test_png_parameters(runs):
    r = runs["generate"]
    (png,) = r.out.glob("*.png")
    params = read_parameters(png.read_bytes())
    assert params["prompt"] == "a red circle"
    assert params["seed"] == 5
    assert params["preset"] == TINY
    assert params["size"] == [64, 64]
    assert params["iterations"] == 6
    assert params["cutn"] == 8  # the preset's default
    assert params["lr"] == 0.1
    assert params["save_every"] == 2
    assert params["untrained"] is True
    assert "torch" in params["versions"]
    assert params["versions"]["t2i"] == t2i.__version__
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (64, 64)


@pytest.mark.subprocess
def test_gif_frames(runs):
    r = runs["generate"]
    (gif,) = r.out.glob("*.gif")
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.n_frames == math.ceil(6 / 2) + 1 == 4
    assert "(4 frames)" in r.stdout


@pytest.mark.subprocess
def test_same_seed_gives_identical_png(runs):
    a, b = runs["generate"], runs["generate-again"]
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    (png_a,) = a.out.glob("*.png")
    (png_b,) = b.out.glob("*.png")
    assert png_a.name == png_b.name
    assert png_a.read_bytes() == png_b.read_bytes()


@pytest.mark.subprocess
def test_size_rounded_and_reported(runs):
    # 70 is not a multiple of the tiny VQGAN's factor (4: two downsamplings), so the size is rounded
    # down and the used size is reported next to the requested one.
    r = runs["size-70"]
    assert r.returncode == 0, r.stderr
    m = re.search(r"size (\d+)x(\d+) \(asked for 70x70; the generator works in multiples of (\d+)\)", r.stdout)
    assert m, r.stdout
    w, h, factor = map(int, m.groups())
    assert factor > 1 and (w, h) == (70 // factor * factor,) * 2 and w < 70
    (png,) = r.out.glob("*.png")
    params = read_parameters(png.read_bytes())
    assert params["size"] == [w, h] and params["requested_size"] == [70, 70]
    with Image.open(png) as im:
        assert im.size == (w, h)


# --- failures: one line, non-zero exit, nothing written ----------------------------------------------

def _assert_one_error_line(r):
    assert r.returncode != 0, (r.args, r.stdout)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and lines[0][len("error:"):].strip(), lines[0]
    assert _files(r.out) == [], _files(r.out)
    assert r.stdout == "", r.stdout
    return lines[0]


def run_in_process(args, out: Path, capsys) -> Run:
    """`main` as `python -m t2i` calls it, in this process (argparse's own refusals exit)."""
    from t2i.cli import main

    args = [*args, "--out", str(out)]
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return Run(args, out, None, code, captured.out, captured.err)


@pytest.mark.parametrize("name, expect", [
    pytest.param(name, expect, marks=[pytest.mark.subprocess] if name in BAD_PROCESSES else [])
    for name, expect in [("iterations-0", "iterations"), ("iterations-abc", "iterations"), ("size-10", "width"),
                         ("cutn-999", "cutn"), ("seed-negative", "seed"), ("empty-prompt", "prompt"),
                         ("nine-parts", "prompt"), ("unknown-preset", "nope"), ("init-text-file", "init_image"),
                         ("init-missing", "init_image")]])
def test_bad_input(request, text_file, tmp_path, capsys, name, expect):
    if name in BAD_PROCESSES:
        r = request.getfixturevalue("runs")[name]
    else:
        r = run_in_process(BAD_INPUTS[name](text_file), tmp_path / "out", capsys)
    line = _assert_one_error_line(r)
    assert expect in line, line
    # A traceback exits 1 too, but would print more than one line; user errors here use exit code 2
    # (bad input) or 1 (unknown preset).
    assert r.returncode == (1 if name == "unknown-preset" else 2)


@pytest.mark.subprocess
def test_trained_preset_without_weights(runs):
    r = runs["trained-missing"]
    line = _assert_one_error_line(r)
    assert f"python -m t2i download {TRAINED}" in line, line
    ckpt = str(r.checkpoints)
    named = re.search(re.escape(ckpt) + r"[^\s:`]*", line)
    assert named, f"no file under {ckpt} named in: {line}"
    path = Path(named.group(0))
    assert path != r.checkpoints and r.checkpoints in path.parents and not path.exists()
    assert _files(r.checkpoints) == [], "the failed run wrote into the checkpoints directory"


# --- presets ----------------------------------------------------------------------------------------

def _preset_blocks(stdout):
    blocks, current = {}, None
    for line in stdout.splitlines():
        if line and not line[0].isspace():
            current = line.strip()
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line.strip())
    return {k: "\n".join(v) for k, v in blocks.items()}


@pytest.mark.subprocess
def test_presets_lists_every_config(runs):
    r = runs["presets"]
    assert r.returncode == 0, r.stderr
    expected = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.name != "weights.yaml")
    assert TINY in expected and TRAINED in expected
    blocks = _preset_blocks(r.stdout)
    assert sorted(blocks) == expected
    assert "weights" not in blocks


@pytest.mark.subprocess
def test_presets_states(runs):
    blocks = _preset_blocks(runs["presets"].stdout)
    assert "random weights" in blocks[TINY]
    assert "missing" in blocks[TRAINED]
    assert f"python -m t2i download {TRAINED}" in blocks[TRAINED]
    assert "download" not in blocks[TINY]


@pytest.mark.parametrize("argv, flag", [
    (["shapesbench", "--n", "0"], "--n"),
    (["shapesbench", "--batch", "0"], "--batch"),
    (["train-demo", "--world", "shapes", "--clip-steps", "0"], "--clip-steps"),
    (["train-demo", "--vqgan-steps", "-5"], "--vqgan-steps"),
    (["train-demo", "--sketch-steps", "0"], "--sketch-steps"),
    (["train-demo", "--refine-steps", "0"], "--refine-steps"),
    (["shapesbench", "--sheet", "/no/such/folder/s.png"], "--sheet"),
    (["train-demo", "--unet-steps", "0"], "--unet-steps"),
    (["train-demo", "--world", "shapes", "--mnist", "somewhere"], "--mnist"),
])
def test_counts_below_one_stop_before_any_work(argv, flag, capsys):
    from t2i.cli import main
    from t2i.paths import BUILTIN_DIR

    before = {p: p.stat().st_mtime_ns for p in (BUILTIN_DIR / "shapes").iterdir()}
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0], err
    assert {p: p.stat().st_mtime_ns for p in (BUILTIN_DIR / "shapes").iterdir()} == before  # nothing rewritten


@pytest.mark.trains
def test_train_demo_interrupted_while_saving_keeps_the_committed_files_and_leaves_no_temporaries(monkeypatch):
    from t2i.cli import main
    from t2i.paths import BUILTIN_DIR
    from t2i.train import vqgan as vqgan_training

    def interrupted(*args, **kwargs):  # Ctrl-C after the CLIP's temporary file is written
        raise KeyboardInterrupt

    monkeypatch.setattr(vqgan_training, "save", interrupted)
    folder = BUILTIN_DIR / "shapes"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["train-demo", "--world", "shapes", "--clip-steps", "1", "--vqgan-steps", "1", "--sketch-steps", "1", "--refine-steps", "1",
                 "--quiet"]) == 130
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no .tmp left, nothing replaced


@pytest.mark.trains
def test_train_demo_under_t2i_builtin_writes_there_and_the_shapes_preset_reads_it(tmp_path, monkeypatch):
    """A seed sweep trains into its own folder; the committed checkpoints/shapes/ stay untouched."""
    import torch

    from t2i.cli import main
    from t2i.families import build_pipeline
    from t2i.paths import BUILTIN_DIR
    from t2i.presets import get_preset

    committed = {p.name: p.read_bytes() for p in (BUILTIN_DIR / "shapes").iterdir()}
    monkeypatch.setenv("T2I_BUILTIN", str(tmp_path))
    assert main(["train-demo", "--world", "shapes", "--clip-steps", "1", "--vqgan-steps", "1", "--sketch-steps", "1", "--refine-steps", "1", "--seed", "3",
                 "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "shapes").iterdir()) == sorted(committed)
    assert {p.name: p.read_bytes() for p in (BUILTIN_DIR / "shapes").iterdir()} == committed
    written = torch.load(tmp_path / "shapes" / "shapes-clip.pt")
    models = build_pipeline(get_preset("shapes"))
    loaded = models.perceptors[0].model.state_dict()
    assert all(torch.equal(loaded[k], v.float()) for k, v in written.items() if v.is_floating_point())
    assert models.sketch is not None


@pytest.mark.trains
def test_train_demo_digits_then_generate_writes_a_grid_and_each_sample(tmp_path, monkeypatch):
    """The digits world end to end through the CLI, on a few training steps under T2I_BUILTIN (the
    committed checkpoints/digits/ stay untouched): train-demo writes the real formats, the preset
    loads them, generate writes the grid and every sample."""
    from PIL import Image

    from t2i.cli import main
    from t2i.paths import BUILTIN_DIR

    committed = sorted(p.name for p in (BUILTIN_DIR / "digits").iterdir()) if (BUILTIN_DIR / "digits").exists() else []
    monkeypatch.setenv("T2I_BUILTIN", str(tmp_path / "builtin"))
    assert main(["train-demo", "--world", "digits", "--clip-steps", "2", "--unet-steps", "2", "--classifier-steps", "2",
                 "--quiet"]) == 0
    written = tmp_path / "builtin" / "digits"
    assert {"digits-clip.pt", "digits-classifier.pt", "unet", "scheduler"} <= {p.name for p in written.iterdir()}
    assert (written / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    out = tmp_path / "out"
    assert main(["generate", "six", "--preset", "digits", "--num-samples", "9", "--steps", "2", "--seed", "4",
                 "--out", str(out), "--quiet"]) == 0
    grid = Image.open(out / "six-4.png")
    assert grid.size == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2)
    assert sorted(p.name for p in out.glob("six-4-*.png")) == [f"six-4-{i:02d}.png" for i in range(1, 10)]
    assert Image.open(out / "six-4-01.png").size == (32, 32)
    assert main(["generate", "six", "--preset", "digits", "--cutn", "8", "--out", str(out)]) == 2
    if committed:
        assert sorted(p.name for p in (BUILTIN_DIR / "digits").iterdir()) == committed


# --- --db, job numbers, priorities, --out, --device: one line each, never a traceback ----------

def _one_line(capsys, argv) -> str:
    from t2i.cli import main

    code = main(argv)
    err = capsys.readouterr().err.splitlines()
    assert code in (1, 2) and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


@pytest.fixture
def job_db(tmp_path):
    from t2i.store import open_store

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    open_store(url).close()
    return url


def test_a_bad_db_is_one_line(tmp_path, capsys):
    import sqlite3

    other = tmp_path / "notes.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    (tmp_path / "text.db").write_text("not a database")
    cases = {
        "mysql://u:secret@host/db": "use sqlite:///",
        "t2i.db": "use sqlite:///",
        f"sqlite:///{tmp_path}": "is a directory",
        f"sqlite:///{tmp_path / 'text.db'}": "not a t2i job database",
        f"sqlite:///{other}": "not a t2i job database",
        "sqlite:////dev/null": "not a regular file",
        "postgresql://t2i_test:secret@127.0.0.1:1/t2i": "Connection refused",
    }
    for db, expect in cases.items():
        line = _one_line(capsys, ["jobs", "--db", db])
        assert expect in line and "secret" not in line, line
    assert other.read_bytes() == before  # another application's file is left as it was


def test_a_wrong_postgres_password_is_one_line(pg_admin_url, capsys):
    from urllib.parse import urlsplit

    parts = urlsplit(pg_admin_url)
    wrong = parts._replace(netloc=f"{parts.username}:wrong-secret@{parts.hostname}:{parts.port}").geturl()
    line = _one_line(capsys, ["jobs", "--db", wrong])
    assert "password authentication failed" in line and "wrong-secret" not in line, line


def test_a_missing_db_is_refused_unless_create(tmp_path, capsys):
    from t2i.cli import main

    path = tmp_path / "typo" / "t2i.db"
    line = _one_line(capsys, ["jobs", "--db", f"sqlite:///{path}"])
    assert f"no job database at {path}" in line and "--create" in line
    assert not path.parent.exists()
    assert main(["jobs", "--db", f"sqlite:///{path}", "--create"]) == 0
    assert path.is_file()
    assert main(["jobs", "--db", f"sqlite:///{path}"]) == 0


@pytest.mark.parametrize("argv, expect", [
    (["cancel", str(2**64)], "no job has the number 18446744073709551616"),
    (["retry", str(2**63)], "no job has the number"),
    (["export", "0"], "no job has the number 0"),
    (["jobs", "--limit", str(2**70)], "--limit"),
    (["submit", "a cat", "--preset", TINY, "--priority", str(2**64)], "priority: must be between"),
    (["submit", "a cat", "--preset", TINY, "--priority", str(2**31)], "priority: must be between"),
])
def test_numbers_beyond_the_store_are_one_line(job_db, capsys, argv, expect):
    from t2i.store import open_store

    line = _one_line(capsys, [*argv, "--db", job_db])
    assert expect in line, line
    store = open_store(job_db)
    assert sum(store.counts().values()) == 0  # nothing queued
    store.close()


def test_export_to_an_existing_file_is_one_line(job_db, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    line = _one_line(capsys, ["export", "1", "--db", job_db, "--out", str(taken)])
    assert "exists and is not a directory" in line
    assert taken.read_text() == "keep me"


@pytest.mark.parametrize("device", ["gpu", "tpu", "cuda:x", "mps"])
def test_an_unknown_device_is_one_line(device, capsys):
    line = _one_line(capsys, ["generate", "a red circle", "--preset", TINY, "--device", device, "--quiet"])
    assert f"--device {device}" in line


@pytest.mark.subprocess
def test_an_endless_image_file_is_refused_without_reading_it_whole():
    """`--init-image /dev/zero` used to be read in full before the 10 MB check (23 GB before the
    kernel stepped in). Under a 3 GB address-space cap the old code died with a MemoryError traceback;
    now at most the limit plus one byte is read and the refusal is one line."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    code = ("import sys\nfrom t2i.cli.common import read_image_file as _read\nfrom t2i.errors import SpecError\n"
            "try:\n    _read('/dev/zero', 'init_image')\nexcept SpecError as e:\n    print(e); sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          preexec_fn=cap)
    assert proc.returncode == 2, proc.stderr[-500:]
    line = proc.stdout.strip()
    assert "\n" not in line and "init_image" in line and "larger than the limit of 10 MB" in line, line


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    """`python -m t2i presets | head -1`: once the reader is gone, no BrokenPipeError traceback, and
    the exit status a shell gives a command stopped by SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line is written
    try:
        run = subprocess.run([sys.executable, "-m", "t2i", "presets"], cwd=ROOT, stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert run.returncode == 141, run.stderr
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr
