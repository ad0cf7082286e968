"""Memory admission (t2i/service/memory.py): estimates, the submit-time refusal, the executor's batch growth
under a memory budget, and the cap on the frames a job keeps. Real models (tiny presets), real store."""

import io

import pytest
from PIL import Image

from t2i.service import executor as executor_module
from t2i.service import memory
from t2i.output import render
from t2i.engine import Runner
from t2i.service.executor import Executor, ExecutorConfig
from t2i.families import build_pipeline
from t2i.service.memory import MARGIN, MAX_FRAMES, Admission, TooLarge, estimate
from t2i.presets import get_preset
from t2i.service.queue import submit_job
from t2i.spec import Limits, make_spec
from t2i.store import open_store

GB = 10**9


def job_spec(name, prompt="a red circle", **fields):
    p = get_preset(name)
    return make_spec(prompt, name, family=p.family, defaults=p.defaults, **fields), p


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def run_recording(ex) -> list[int]:
    """Run the executor until the queue is empty; the number of jobs in the batch at each step."""
    sizes = []
    real_step = executor_module.Runner.step

    def recording_step(runner):
        sizes.append(len(runner.slots))
        return real_step(runner)

    executor_module.Runner.step = recording_step
    try:
        assert ex.run() == 0
    finally:
        executor_module.Runner.step = real_step
        ex.close()
    return sizes


# --- estimates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, sides", [("shapes", (64, 128, 256, 512, 1024)),
                                         ("tiny-vqgan-untrained", (64, 256, 512)),
                                         ("tiny-diffusion-untrained", (32, 64, 256, 512)),
                                         ("tiny-ldm-untrained", (64, 256, 512))])
def test_memory_estimate_grows_with_size(name, sides):
    needs = [estimate(job_spec(name, width=s, height=s)[0], get_preset(name)).total for s in sides]
    assert needs == sorted(needs) and len(set(needs)) == len(needs)


def test_memory_estimate_grows_with_samples_and_cutouts_and_batch():
    for name, field, values in (("digits", "num_samples", (1, 4, 64)), ("shapes-ldm", "num_samples", (1, 8)),
                                ("shapes", "cutn", (1, 16, 64))):
        needs = [estimate(*job_spec(name, **{field: v})).job for v in values]
        assert needs == sorted(needs) and len(set(needs)) == len(needs), name
    one, preset = job_spec("shapes", width=256, height=256)
    need = estimate(one, preset)
    admission = Admission(budget=need.fixed + int(3 * need.job * (1 + MARGIN)) + 1)
    assert [admission.fits([need] * k, need) for k in range(5)] == [True, True, True, False, False]


def test_memory_the_vqgan_attention_is_what_makes_large_sizes_costly():
    # The case: 1024x1024 through a factor-4 decoder's mid-block attention (65536 tokens).
    spec, preset = job_spec("tiny-vqgan-untrained", width=1024, height=1024)
    assert estimate(spec, preset).total > 17 * GB


def test_memory_an_upscaled_grid_is_counted_at_the_grids_size(tmp_path, monkeypatch):
    """A several-sample job's upscaler runs on the grid: 64 GAN samples of 64x64 make a 530x530 grid,
    so an x4 ESRGAN runs on full 256x256 tiles (about 1 GB of activations), not on one sample's 64x64."""
    from t2i.paths import ROOT
    from t2i.upscale import TILE, TILE_BYTES_PER_PIXEL

    registry = tmp_path / "weights.yaml"
    registry.write_text((ROOT / "configs" / "weights.yaml").read_text()
                        + "\ntiny-x4: {kind: esrgan, files: {upscale/tiny_x4.pth: []}}\n")
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    plain, preset = job_spec("tiny-gan-untrained", num_samples=64)
    upscaled, _ = job_spec("tiny-gan-untrained", num_samples=64, upscale="tiny-x4")
    extra = estimate(upscaled, preset).job - estimate(plain, preset).job
    assert extra >= TILE_BYTES_PER_PIXEL["esrgan"] * TILE["esrgan"] ** 2


# --- submit ------------------------------------------------------------------------------------

def test_memory_submit_refuses_a_job_no_executor_could_run_and_names_the_largest_size(store):
    limits = Limits(max_job_memory=3 * GB)
    with pytest.raises(TooLarge) as refused:
        submit_job(store, "a red circle", "shapes", width=1024, height=1024, limits=limits)
    message = str(refused.value)
    head = "shapes needs about "
    assert message.startswith(head) and " GB at 1024x1024 with 16 cutouts; the largest it makes here is " in message
    assert "\n" not in message and sum(store.counts().values()) == 0
    side = int(message.rsplit(" ", 1)[1].split("x")[0])
    assert 128 <= side < 1024 and side % 4 == 0
    assert submit_job(store, "a red circle", "shapes", width=side, height=side, limits=limits)
    with pytest.raises(TooLarge):
        submit_job(store, "a red circle", "shapes", width=side + 4, height=side + 4, limits=limits)
    # A preset of one size only: the other options are what to lower.
    with pytest.raises(TooLarge, match=r"^digits needs about .* 64 samples; jobs here get at most .*: lower the "
                                       r"size or the number of samples$"):
        submit_job(store, "a seven", "digits", num_samples=64, limits=Limits(max_job_memory=int(0.9 * GB)))


def test_memory_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("T2I_MAX_JOB_MEMORY", "20GB")
    assert Limits.from_env().max_job_memory is None  # resolved where it is used:
    assert memory.submit_budget() == 20 * GB
    monkeypatch.setenv("T2I_MAX_JOB_MEMORY", "24GiB")
    assert memory.submit_budget() == 24 * 2**30
    monkeypatch.delenv("T2I_MAX_JOB_MEMORY")
    assert 0 < memory.submit_budget() < memory.meminfo("MemTotal")


# --- executors ---------------------------------------------------------------------------------

def test_memory_a_batch_is_not_grown_past_the_budget(store, store_url):
    fields = dict(iterations=3, cutn=2, save_every=1)
    jobs = [submit_job(store, f"batched {i}", "tiny-vqgan-untrained", seed=i, **fields) for i in range(4)]
    need = estimate(*job_spec("tiny-vqgan-untrained", **fields))
    budget = need.fixed + int(2 * need.job * (1 + MARGIN)) + 1  # room for two jobs, not three
    sizes = run_recording(Executor(ExecutorConfig(db=store_url, once=True, batch="4", memory_budget=budget)))
    assert max(sizes) == 2
    assert all(store.get(j).status == "done" for j in jobs)


def test_memory_a_job_that_can_never_fit_fails_with_one_line_and_its_batch_mates_finish(store, store_url):
    preset = "tiny-diffusion-untrained"
    small = [submit_job(store, f"a {d}", preset, steps=4, seed=d) for d in (1, 2)]
    big = submit_job(store, "a lot of threes", preset, steps=4, num_samples=64, seed=3)
    later = submit_job(store, "a four", preset, steps=4, seed=4)
    one, big_need = estimate(*job_spec(preset, steps=4)), estimate(*job_spec(preset, steps=4, num_samples=64))
    budget = one.fixed + int(2 * one.job * (1 + MARGIN)) + 1
    assert big_need.fixed + big_need.job * (1 + MARGIN) > budget  # the test's premise
    sizes = run_recording(Executor(ExecutorConfig(db=store_url, once=True, batch="4", memory_budget=budget)))
    failed = store.get(big)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error.startswith(f"{preset} needs about ") and "\n" not in failed.error
    assert failed.error.endswith("32x32, 4 DDIM steps, CFG 3, 64 samples; this executor's budget has "
                                 f"{memory.gb(budget)}: lower the size or the number of samples")
    assert all(store.get(j).status == "done" for j in [*small, later]) and max(sizes) == 2


def test_memory_a_job_too_large_for_the_running_batch_waits_and_runs_alone(store, store_url):
    preset = "tiny-diffusion-untrained"
    first = submit_job(store, "a one", preset, steps=6, seed=1)
    wide = submit_job(store, "eight twos", preset, steps=3, num_samples=8, seed=2)
    one, wide_need = estimate(*job_spec(preset, steps=6)), estimate(*job_spec(preset, steps=3, num_samples=8))
    budget = one.fixed + int(wide_need.job * (1 + MARGIN)) + 1  # room for the wide job alone
    assert (one.job + wide_need.job) * (1 + MARGIN) > budget - one.fixed  # not beside the first job
    seen = []
    real_step = executor_module.Runner.step

    def recording_step(runner):
        seen.append(sorted(runner.slots))
        return real_step(runner)

    executor_module.Runner.step = recording_step
    ex = Executor(ExecutorConfig(db=store_url, once=True, batch="4", memory_budget=budget))
    try:
        assert ex.run() == 0
    finally:
        executor_module.Runner.step = real_step
        ex.close()
    assert [first] in seen and [wide] in seen and [first, wide] not in seen
    assert store.get(wide).status == "done" and store.get(wide).attempts == 1  # given back, not counted
    assert store.get(first).status == "done"


# --- frames ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_memory_a_long_job_keeps_at_most_the_frame_cap_and_its_gif_runs_first_to_last(pipelines):
    spec, _ = job_spec("tiny-diffusion-untrained", steps=3 * MAX_FRAMES + 5, save_every=1, seed=1)
    runner = Runner(pipelines("tiny-diffusion-untrained"))
    slot = runner.add(0, spec)
    held = 0
    while not slot.done:
        steps = runner.step()
        assert steps[0].frame is not None  # the executor still gets every frame, as progress
        held = max(held, len(slot.frames))
    result = runner.result(0)
    assert held <= MAX_FRAMES and len(result.frames) <= MAX_FRAMES + 1
    assert result.frame_steps[0] == 0 and result.frame_steps[-1] == spec.total_steps
    assert result.frame_steps == sorted(result.frame_steps)
    assert result.frame_steps[-2] >= spec.total_steps - 8  # the kept frames reach the end of the run
    with Image.open(io.BytesIO(render.gif_bytes(result.frames))) as gif:
        assert 2 <= gif.n_frames <= MAX_FRAMES + 1 and gif.size == result.image.size


# --- the Generate page ---------------------------------------------------------------------------

def test_memory_the_generate_page_states_the_largest_size_and_refuses_a_larger_one_in_one_line(tmp_path,
                                                                                                 monkeypatch):
    from streamlit.testing.v1 import AppTest

    from t2i.paths import ROOT

    url = f"sqlite:///{tmp_path / 't2i.db'}"
    monkeypatch.setenv("T2I_DB", url)
    monkeypatch.setenv("T2I_MAX_JOB_MEMORY", "3GB")
    at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
    at.query_params["v"] = "0123456789abcdef0123456789abcdef"
    at.run()
    at.selectbox(key="preset").select("tiny-vqgan-untrained").run()
    side = memory.largest_side(job_spec("tiny-vqgan-untrained")[0], get_preset("tiny-vqgan-untrained"), 3 * GB)
    assert f"Largest size here: {side}x{side} with the preset's default options, or about as many pixels in " \
           "another shape." in [c.value for c in at.caption]
    at.text_area(key="prompt").input("a red circle")
    at.text_input(key="width").input("1024")
    at.text_input(key="height").input("1024")
    [b for b in at.button if b.label == "Generate"][0].click().run()
    assert not at.exception, at.exception
    lines = [t.value for t in at.text]
    assert any(line.startswith("tiny-vqgan-untrained needs about ") and
               line.endswith(f"at 1024x1024 with 8 cutouts; the largest it makes here is {side}x{side}")
               for line in lines), lines
    s = open_store(url)
    try:
        assert sum(s.counts().values()) == 0
    finally:
        s.close()


def test_model_bytes_counts_a_file_once_when_components_share_a_folder(tmp_path, monkeypatch):
    """LDM's text encoder names the release's root folder, which also holds the UNet's and VAE's."""
    from t2i.service.memory import model_bytes
    from t2i.presets import Component, Preset

    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    for sub, size in (("unet", 1000), ("bert", 300), ("vqvae", 200)):
        (tmp_path / "ldm" / sub).mkdir(parents=True)
        (tmp_path / "ldm" / sub / "weights.bin").write_bytes(b"x" * size)
    preset = Preset(name="p", description="", family="diffusion", components={
        "unet": Component("diffusers-unet", weights="ldm/unet"), "text": Component("ldm-bert", weights="ldm"),
        "codec": Component("diffusers-vae", weights="ldm/vqvae")})
    assert model_bytes(preset) == 2 * 1500  # fp16 files counted twice over, each file once
