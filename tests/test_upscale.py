"""Upscalers as post-steps (t2i/upscale/, the Runner's post-steps, the spec's `upscale`, the CLI and
the executor): tiny ESRGAN state dicts built with spandrel's own architecture class (and by hand in
Real-ESRGAN's released key layout), saved as plain tensors and loaded back through spandrel's real
ModelLoader; SRCNN in its published layout. Every test has its own weights registry and checkpoints
folder (T2I_WEIGHTS_REGISTRY, T2I_CHECKPOINTS). CPU, seconds."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from spandrel import ModelLoader
from spandrel.architectures.ESRGAN import ESRGAN

from t2i import upscale
from t2i.engine import run, run_batches
from t2i.errors import BrokenWeights, Cancelled, SpecError, WeightsMissing
from t2i.service.executor import Executor, ExecutorConfig
from t2i.paths import ROOT
from t2i.presets import get_preset
from t2i.service.queue import submit_job
from t2i.output.render import read_parameters
from t2i.spec import JobSpec, make_spec
from t2i.store import open_store
from t2i.upscale import esrgan
from t2i.upscale.srcnn import rgb_to_ycbcr

TINY = "tiny-vqgan-untrained"
REGISTRY = """
tiny-esrgan-x2: {kind: esrgan, files: {upscale/tiny_esrgan_x2.pth: []}}
tiny-esrgan-x4: {kind: esrgan, files: {upscale/tiny_esrgan_x4.pth: []}}
official-x4: {kind: esrgan, files: {upscale/RealESRGAN_x4plus.pth: []}}
wide-x4: {kind: esrgan, files: {upscale/wide_x4.pth: []}}
srcnn-x2: {kind: srcnn, files: {upscale/srcnn_x2.pth: []}}
missing-x4: {kind: esrgan, files: {upscale/missing_x4.pth: []}}
some-vqgan: {kind: taming, files: {some.yaml: [], some.ckpt: []}}
"""
KNOWN = ["tiny-esrgan-x2", "tiny-esrgan-x4", "official-x4", "wide-x4", "srcnn-x2", "missing-x4"]


def tiny_esrgan(scale: int, features: int = 8, seed: int = 0) -> dict:
    """An ESRGAN (RRDBNet) state dict of spandrel's own class, one block, as plain tensors."""
    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=features, num_blocks=1, scale=scale)
    return {k: v.clone() for k, v in net.state_dict().items()}


def official_layout(features: int = 8, grow: int = 32, blocks: int = 1, seed: int = 0) -> dict:
    """An x4 RRDBNet in the key layout of Real-ESRGAN's released files (basicsr's names, inside
    `params_ema`), written out by hand; the growth channels are the released 32 (spandrel's loader
    takes them as fixed)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv_first": (features, 3)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for i in range(1, 5):
                shapes[f"body.{b}.rdb{r}.conv{i}"] = (grow, features + (i - 1) * grow)
            shapes[f"body.{b}.rdb{r}.conv5"] = (features, features + 4 * grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (features, features)
    shapes["conv_last"] = (3, features)
    state = {}
    for name, (out_ch, in_ch) in shapes.items():
        state[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * 0.05
        state[f"{name}.bias"] = torch.zeros(out_ch)
    return {"params_ema": state}


def srcnn_published(seed: int = 0) -> dict:
    """SRCNN in the yjn870 port's layout: a pass-through network, perturbed (as in test_srcnn.py)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,), "conv2.weight": (32, 64, 5, 5),
              "conv2.bias": (32,), "conv3.weight": (1, 32, 5, 5), "conv3.bias": (1,)}
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    state["conv1.weight"][0, 0, 4, 4] = state["conv2.weight"][0, 0, 2, 2] = state["conv3.weight"][0, 0, 2, 2] = 1.0
    return {k: v + torch.randn(v.shape, generator=g) * 0.02 for k, v in state.items()}


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """The registry above, with every file but missing-x4's written under tmp_path."""
    registry, checkpoints = tmp_path / "weights.yaml", tmp_path / "checkpoints"
    registry.write_text(REGISTRY)
    (checkpoints / "upscale").mkdir(parents=True)
    torch.save(tiny_esrgan(2), checkpoints / "upscale/tiny_esrgan_x2.pth")
    torch.save(tiny_esrgan(4), checkpoints / "upscale/tiny_esrgan_x4.pth")
    torch.save(official_layout(), checkpoints / "upscale/RealESRGAN_x4plus.pth")
    # 64 features like the released models: a 256x256 tile needs about a gigabyte (the OOM test's load).
    torch.save(tiny_esrgan(4, features=64), checkpoints / "upscale/wide_x4.pth")
    torch.save(srcnn_published(), checkpoints / "upscale/srcnn_x2.pth")
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(checkpoints))
    upscale.clear()
    yield checkpoints / "upscale"
    upscale.clear()


def image(w=24, h=20, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(40, 215, (h, w, 3), dtype=np.uint8))


def levels(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def one_line(error: BaseException, *parts: str) -> str:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


# --- the module's API --------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_names_lists_the_registrys_upscalers_without_importing_torch(weights):
    assert upscale.names() == KNOWN  # the taming entry is not an upscaler
    code = "import sys, t2i.upscale as u; print(u.names(), u.scale_hint('srcnn-x2'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True,
                         text=True, timeout=120, check=True).stdout.split("\n")[0]
    assert out == f"{KNOWN} 2 False"


@pytest.mark.parametrize("scale", [2, 4])
def test_a_tiny_esrgan_state_dict_loads_through_spandrel_and_upscales_by_its_factor(weights, scale):
    path = weights / f"tiny_esrgan_x{scale}.pth"
    saved = torch.load(path, weights_only=True)
    assert isinstance(saved, dict) and all(isinstance(v, torch.Tensor) for v in saved.values())
    described = ModelLoader().load_from_file(path)   # spandrel finds ESRGAN and the scale by the keys
    assert described.architecture.name == "ESRGAN" and described.scale == scale

    upscaler = upscale.build(f"tiny-esrgan-x{scale}")
    assert (upscaler.name, upscaler.kind, upscaler.scale) == (f"tiny-esrgan-x{scale}", "esrgan", scale)
    src = image()
    out = upscaler(src)
    assert out.mode == "RGB" and out.size == (24 * scale, 20 * scale)
    # It is the loaded network's output (the whole image fits one tile), rounded to whole levels.
    x = torch.from_numpy(np.asarray(src, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    direct = (described(x)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert levels(out, Image.fromarray(direct)) <= 1
    assert levels(out, src.resize(out.size, Image.Resampling.BICUBIC)) > 10  # not a plain resize


def test_real_esrgans_released_key_layout_loads_as_x4(weights):
    upscaler = upscale.build("official-x4")
    assert upscaler.scale == 4 and upscaler.net.architecture.name == "ESRGAN"
    assert upscaler(image(10, 7)).size == (40, 28)


def test_tiles_with_enough_overlap_give_the_whole_images_result(weights):
    model = upscale.build("tiny-esrgan-x2").net
    src = image(70, 45, seed=3)
    whole = esrgan.upscale(src, model, tile=512)
    # One block reaches about 18 input pixels; 24 of context make the 16-pixel tiles exact.
    tiled = esrgan.upscale(src, model, tile=16, overlap=24)
    assert tiled.size == whole.size == (140, 90) and levels(tiled, whole) <= 1


def test_srcnn_through_build_keeps_the_bicubic_chroma(weights):
    upscaler = upscale.build("srcnn-x2")
    assert (upscaler.kind, upscaler.scale) == ("srcnn", 2)
    src = Image.fromarray(np.random.default_rng(4).integers(70, 180, (20, 24, 3), dtype=np.uint8))  # mid-tones
    out = upscaler(src)
    assert out.size == (48, 40)
    rgb = torch.from_numpy(np.asarray(out, dtype=np.float32))
    got = rgb_to_ycbcr(rgb)
    ref = rgb_to_ycbcr(torch.from_numpy(np.asarray(src.resize((48, 40), Image.Resampling.BICUBIC), dtype=np.float32)))
    assert (got[..., 0] - ref[..., 0]).abs().max() > 3     # the network changed the luma
    # Cb/Cr are the bicubic image's, up to whole levels, wherever no RGB channel was clipped.
    inside = ((rgb > 0) & (rgb < 255)).all(-1)
    assert inside.float().mean() > 0.9
    assert (got[..., 1:] - ref[..., 1:])[inside].abs().max() <= 1.0


def test_load_keeps_an_upscaler_per_process(weights):
    first = upscale.load("tiny-esrgan-x2")
    assert upscale.load("tiny-esrgan-x2") is first
    upscale.clear()
    assert upscale.load("tiny-esrgan-x2") is not first


def test_a_missing_file_names_it_and_the_download_command(weights):
    with pytest.raises(WeightsMissing) as e:
        upscale.build("missing-x4")
    one_line(e.value, str(weights / "missing_x4.pth"), "python -m t2i download missing-x4")


@pytest.mark.parametrize("damage", ["truncated", "html", "other-model", "not-a-dict", "half-a-model"])
def test_a_broken_file_is_one_line_naming_it(weights, damage):
    path = weights / "tiny_esrgan_x4.pth"
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "html":
        path.write_bytes(b"<html><body>404 Not Found</body></html>\n" * 20)
    elif damage == "other-model":
        torch.save(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).state_dict(), path)
    elif damage == "not-a-dict":
        torch.save([torch.zeros(3)], path)
    else:  # the ESRGAN layout, with its last layers missing
        state = tiny_esrgan(4)
        torch.save({k: v for k, v in state.items() if not k.startswith(("model.8", "model.10"))}, path)
    with pytest.raises(BrokenWeights) as e:
        upscale.build("tiny-esrgan-x4")
    one_line(e.value, str(path))


def test_an_unknown_name_is_one_line_naming_the_known_ones(weights):
    with pytest.raises(SpecError) as e:
        upscale.build("realesrgan-x8")
    one_line(e.value, "upscale", "'realesrgan-x8'", ", ".join(KNOWN), "none")


# --- the spec --------------------------------------------------------------------------------------

def spec(upscale_=None, post=(), **kw):
    p = get_preset(TINY)
    fields = dict(iterations=2, cutn=2, width=64, height=64, save_every=1, seed=3)
    return make_spec("a red circle", TINY, defaults=p.defaults, upscale=upscale_, post=post, **{**fields, **kw})


def test_the_spec_takes_the_presets_post_steps_unless_told_otherwise(weights):
    plain = spec()
    assert plain.upscale == () and plain.total_steps == 2
    assert spec(post=("tiny-esrgan-x2",)).upscale == ("tiny-esrgan-x2",)
    assert spec("none", post=("tiny-esrgan-x2",)).upscale == ()
    assert spec([], post=("tiny-esrgan-x2",)).upscale == ()
    chained = spec(" tiny-esrgan-x2 , srcnn-x2")
    assert chained.upscale == ("tiny-esrgan-x2", "srcnn-x2") == spec(["tiny-esrgan-x2", "srcnn-x2"]).upscale
    assert chained.total_steps == 4 and chained.family_steps == 2
    assert chained.batch_key == plain.batch_key  # post-steps run beside the batch, not in it
    assert chained.describe(64, 64) == "64x64 with 2 cutouts, then tiny-esrgan-x2 and srcnn-x2"
    again = JobSpec.from_dict(json.loads(json.dumps(chained.to_dict())))
    assert again == chained
    old = chained.to_dict()
    del old["upscale"]  # a spec stored before post-steps existed
    assert JobSpec.from_dict(old).upscale == ()


@pytest.mark.parametrize("value,post,width,words", [
    ("nope", (), 64, ["unknown upscaler 'nope'", "known: " + ", ".join(KNOWN) + " (or none)"]),
    (None, ("nope",), 64, ["unknown upscaler 'nope'"]),
    ("none,tiny-esrgan-x2", (), 64, ["'none' cannot be combined"]),
    (",".join(["srcnn-x2"] * 5), (), 64, ["at most 4 upscalers"]),
    (7, (), 64, ["must be upscaler names"]),
])
def test_bad_upscalers_are_one_line_naming_the_field(weights, value, post, width, words):
    with pytest.raises(SpecError) as e:
        spec(value, post=post, width=width)
    one_line(e.value, "upscale:", *words)


def test_the_largest_upscaled_side_is_allowed(weights, tmp_path):
    assert spec("tiny-esrgan-x4,tiny-esrgan-x4,tiny-esrgan-x4").upscale == ("tiny-esrgan-x4",) * 3  # 64 -> 4096
    # The final size is checked with the preset (t2i/service/caps.py, tests/test_caps.py): at submit, one
    # more pixel a side is refused with what would be made.
    store = open_store(f"sqlite:///{tmp_path / 't2i.db'}")
    try:
        with pytest.raises(SpecError) as e:
            submit_job(store, "a red circle", TINY, upscale="tiny-esrgan-x4,tiny-esrgan-x4,tiny-esrgan-x4",
                       iterations=2, cutn=2, width=68, height=64)
        one_line(e.value, "upscale:", "would make 4352x4096", "ask for at most 64x64")
        assert sum(store.counts().values()) == 0
    finally:
        store.close()


def test_an_upscaler_without_its_file_is_refused_at_submit_and_nothing_is_queued(weights, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 't2i.db'}")
    try:
        with pytest.raises(WeightsMissing) as e:
            submit_job(store, "a red circle", TINY, upscale="tiny-esrgan-x2,missing-x4", iterations=2, cutn=2,
                       width=64, height=64)
        message = one_line(e.value, "upscaler missing-x4", "run `python -m t2i download missing-x4`")
        assert str(weights) not in message
        assert sum(store.counts().values()) == 0
    finally:
        store.close()


def test_an_unknown_upscaler_is_refused_at_submit_and_nothing_is_queued(weights, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 't2i.db'}")
    try:
        with pytest.raises(SpecError) as e:
            submit_job(store, "a red circle", TINY, upscale="realesrgan", iterations=2)
        one_line(e.value, "unknown upscaler 'realesrgan'", "tiny-esrgan-x2")
        assert sum(store.counts().values()) == 0
        job = submit_job(store, "a red circle", TINY, upscale="tiny-esrgan-x2", iterations=2, cutn=2, width=64,
                         height=64)
        assert store.get(job).total == 3  # the store's progress counts the post-step
    finally:
        store.close()


# --- the Runner --------------------------------------------------------------------------------------

def test_a_post_step_is_one_more_step_with_the_upscaled_frame(weights, tiny_models):
    steps = []
    result = run(spec("tiny-esrgan-x2", iterations=3), tiny_models, on_step=steps.append)
    plain = run(spec(iterations=3), tiny_models)
    assert [(s.step, s.total) for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    last = steps[-1]
    assert last.loss is None and last.frame.size == (128, 128) and last.frame_step == 3
    assert result.image.size == (128, 128) and (result.width, result.height) == (128, 128)
    assert result.upscaled_from == (64, 64)
    # The GIF stays at the size the family made and ends on its image; the PNG is that image upscaled.
    assert {f.size for f in result.frames} == {(64, 64)} and result.frame_steps[-1] == 3
    assert levels(result.frames[-1], plain.image) == 0
    assert levels(result.image, upscale.load("tiny-esrgan-x2", "cpu")(plain.image)) == 0


def test_chained_upscalers_multiply_and_cancel_works_between_them(weights, tiny_models):
    chained = spec("tiny-esrgan-x2,srcnn-x2", iterations=2)
    assert run(chained, tiny_models).image.size == (256, 256)
    seen = []

    def stop_after_first_upscaler(step):
        seen.append(step.step)
        return step.step == 3
    with pytest.raises(Cancelled) as e:
        run(chained, tiny_models, on_step=stop_after_first_upscaler)
    assert str(e.value) == "stopped after 3 of 4 steps" and seen == [1, 2, 3]


def test_a_missing_upscaler_fails_the_job_before_its_first_step(weights, tiny_models):
    steps = []
    with pytest.raises(WeightsMissing) as e:
        run(spec("missing-x4"), tiny_models, on_step=steps.append)
    one_line(e.value, "missing_x4.pth", "python -m t2i download missing-x4")
    assert steps == []


def test_a_batch_mixes_jobs_with_and_without_post_steps(weights, tiny_models):
    with_post, without = spec("tiny-esrgan-x4", seed=1), spec(seed=2, iterations=4)
    a, b = run_batches([with_post, without], tiny_models, batch=2)
    assert a.image.size == (256, 256) and b.image.size == (64, 64) and b.upscaled_from is None
    assert levels(b.image, run(without, tiny_models).image) <= 2  # batch-mates do not change it


# --- the executor and out of memory --------------------------------------------------------------------

def test_the_executor_stores_the_upscaled_png_and_counts_the_post_step(weights, tmp_path):
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    store = open_store(url)
    try:
        job = submit_job(store, "a red circle", TINY, upscale="tiny-esrgan-x2", iterations=2, cutn=2, width=64,
                         height=64, save_every=1, seed=1)
        ex = Executor(ExecutorConfig(db=url, once=True))
        try:
            assert ex.run() == 0
        finally:
            ex.close()
        done = store.get(job)
        assert done.status == "done" and (done.step, done.total) == (3, 3)
        result = store.result(job)
        assert (result.width, result.height) == (128, 128)
        assert Image.open(io.BytesIO(result.png)).size == (128, 128)
        params = read_parameters(result.png)
        assert params["upscale"] == ["tiny-esrgan-x2"] and params["size"] == [128, 128]
        assert params["generated_size"] == [64, 64]
    finally:
        store.close()


OOM_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from t2i import upscale
    from t2i.service.executor import Executor, ExecutorConfig
    from t2i.service.queue import submit_job
    from t2i.store import open_store

    url = sys.argv[1]
    store = open_store(url)
    small = dict(iterations=2, cutn=2, width=64, height=64, save_every=1, seed=1)
    # Same batch key: both run in one batch. The first upscales 64 -> 256 (fine), then 256 -> 1024:
    # 64 features on a 256x256 tile need about a gigabyte, more than the limit below leaves.
    big = submit_job(store, "a red circle", "tiny-vqgan-untrained", upscale="wide-x4,wide-x4", **small)
    mate = submit_job(store, "a blue square", "tiny-vqgan-untrained", **{**small, "iterations": 8})
    ex = Executor(ExecutorConfig(db=url, once=True, batch="2", memory_budget=2**40))
    ex.cache.get("tiny-vqgan-untrained")
    upscale.load("wide-x4", torch.device("cpu"))
    ex.admission.budget = None
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
    # A real allocation failure: the address space is capped at what the process holds plus 400 MB.
    resource.setrlimit(resource.RLIMIT_AS, (vm + 400 * 2**20, resource.RLIM_INFINITY))
    ex.run()
    print(json.dumps({name: [store.get(j).status, store.get(j).error] for name, j in (("big", big), ("mate", mate))}))
""")


@pytest.mark.subprocess
def test_running_out_of_memory_in_a_post_step_fails_that_job_alone(weights, tmp_path):
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    open_store(url).close()
    proc = subprocess.run([sys.executable, "-c", OOM_SCRIPT, url], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["mate"] == ["done", None]
    status, error = outcome["big"]
    assert status == "failed"
    assert one_line(error) == ("out of CPU memory at wide-x4 on 256x256 (to 1024x1024), after 64x64 with 2 cutouts: "
                               "lower the size, or choose a smaller upscaler or none")


# --- the CLI -----------------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_the_cli_upscales_and_refuses_an_unknown_upscaler_in_one_line(weights, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["--preset", TINY, "--iterations", "2", "--cutn", "2", "--size", "64", "64", "--seed", "5"]
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runs = {
        "good": ["generate", "a red circle", *base, "--upscale", "tiny-esrgan-x2", "--upscale", "srcnn-x2",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "good")],
        "unknown": ["generate", "a red circle", *base, "--upscale", "esrgan", "--device", "cpu", "--quiet",
                    "--out", str(tmp_path / "unknown")],
        "submit-unknown": ["submit", "a red circle", *base, "--upscale", "esrgan", "--db", db, "--create"],
    }

    def cli(args):
        return subprocess.run([sys.executable, "-m", "t2i", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    with ThreadPoolExecutor(3) as pool:
        done = dict(zip(runs, pool.map(cli, runs.values())))

    good = done["good"]
    assert good.returncode == 0, good.stderr
    (png,) = (tmp_path / "good").glob("*.png")
    assert Image.open(png).size == (256, 256)
    assert read_parameters(png.read_bytes())["upscale"] == ["tiny-esrgan-x2", "srcnn-x2"]
    assert "size 64x64, upscaled by tiny-esrgan-x2 and srcnn-x2 to 256x256" in good.stdout
    for name in ("unknown", "submit-unknown"):
        proc = done[name]
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "error: upscale: unknown upscaler 'esrgan'; known: " + ", ".join(KNOWN) in proc.stderr
    assert not (tmp_path / "unknown").exists()
    store = open_store(db)
    try:
        assert sum(store.counts().values()) == 0
    finally:
        store.close()
