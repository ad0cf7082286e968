"""End to end in a real browser: the Streamlit app and one CPU executor as separate processes, driven by
Playwright through Debian's Chromium (tests/setup_browser.sh installs it). Screenshots of every page go to
test-artifacts/browser/ and to res/page-*.png (the README shows those)."""

import csv
import io
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from t2i.service import compare
from t2i.service.executor import Executor, ExecutorConfig
from t2i.paths import ROOT
from t2i.presets import get_preset
from t2i.service.queue import submit_job
from t2i.store import open_store
from t2i.web.visitor import COOKIE, visitor_of
from webserver import free_port, stop, wait_healthy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
KEY = "b0" * 21 + "b"            # the visitor's cookie; the store knows them by its hash
VISITOR = visitor_of(KEY)
SEED_PROMPT = "a red circle on a white field"
PROMPT = "a lighthouse in a storm, seen from the browser test"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
pytestmark = [pytest.mark.browser, pytest.mark.subprocess]  # Chromium, and the app and an executor as processes
RES = ROOT / "res"
# The README's screenshots are tracked files: a test run refreshes them only when asked, so running
# the suite leaves the checkout clean. Every run still writes them under test-artifacts/browser/.
REFRESH_SCREENSHOTS = os.environ.get("T2I_REFRESH_SCREENSHOTS") == "1"
TIMEOUT_MS = 30_000       # one page render or rerun
JOB_TIMEOUT_MS = 180_000  # the executor starts, loads the preset and runs 30 iterations

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

_missing = [what for what, ok in [(CHROMIUM, os.path.exists(CHROMIUM)),
                                  ("the playwright package", sync_playwright is not None)] if not ok]
if _missing:
    reason = f"browser test needs {' and '.join(_missing)}: run tests/setup_browser.sh and install requirements-dev.txt"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A seeded database, the web app and one CPU executor; yields (base URL, store, executor process)."""
    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 't2i.db'}"
    checkpoints = tmp / "checkpoints"
    checkpoints.mkdir()
    store = open_store(url)
    # Two finished images of the same prompt from different presets: the Vote page's pair.
    for seed, preset in enumerate(["tiny-vqgan-untrained", "tiny-gumbel-untrained"]):
        submit_job(store, SEED_PROMPT, preset, iterations=2, cutn=2, seed=seed)
    seeder = Executor(ExecutorConfig(db=url, worker_id="browser-test-seeder", once=True, cache_size=2))
    seeder.run()
    seeder.close()
    assert store.counts()["done"] == 2

    env = dict(os.environ, T2I_DB=url, T2I_CHECKPOINTS=str(checkpoints), OMP_NUM_THREADS="1",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    port = free_port()
    web_log, exec_log = tmp / "web.log", tmp / "executor.log"
    procs = []
    try:
        with open(web_log, "wb") as out:
            procs.append(subprocess.Popen(
                [str(ROOT / ".venv/bin/streamlit"), "run", "webapp.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        with open(exec_log, "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "job_executor.py", "--device", "cpu", "--poll", "0.2"],
                                          cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", procs[0], web_log)
        yield f"http://127.0.0.1:{port}", store, procs[1], exec_log
    finally:
        for proc in procs:
            stop(proc)
        store.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def visitor_page(browser, base: str, key: str, **options):
    """A page of a browser that holds visitor cookie `key` (as the server would have set it)."""
    context = browser.new_context(**options)
    context.add_cookies([{"name": COOKIE, "value": key, "url": base, "httpOnly": True, "sameSite": "Lax"}])
    return context.new_page()


def idle(page) -> None:
    """Wait until the script run the last interaction started has finished (Streamlit marks the app)."""
    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(
        1, timeout=TIMEOUT_MS)


def shot(page, name: str, res_name: str | None = None) -> None:
    """The whole page: Streamlit scrolls inside its main container, so the viewport grows to fit it first."""
    idle(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    viewport = page.viewport_size
    height = page.evaluate("""() => Math.max(...['stMain', 'stAppViewContainer'].map(id =>
        document.querySelector(`[data-testid="${id}"]`)?.scrollHeight || 0))""")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], height)})
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)
    if res_name and REFRESH_SCREENSHOTS:
        shutil.copyfile(path, RES / f"page-{res_name}.png")


def no_exception(page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)


def go_to(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=TIMEOUT_MS)
    idle(page)


def test_every_page_in_a_real_browser(service, browser):
    base, store = service[:2]
    page = visitor_page(browser, base, KEY, viewport={"width": 1280, "height": 900}, accept_downloads=True)
    # Without the save-file picker (which needs a person) the grid's CSV export is a plain download.
    page.add_init_script("delete window.showSaveFilePicker")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Generate: fill in the form, submit, watch the job run to the end.
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_label("Prompt").fill(PROMPT)
    preset = page.get_by_role("combobox", name="Preset")
    preset.click()
    page.get_by_role("option", name="tiny-vqgan-untrained", exact=True).click()
    expect(preset).to_have_value("tiny-vqgan-untrained")
    idle(page)  # the preset's rerun (with its guide) must end before the expander is opened
    # idle() can see the previous run end before the preset's rerun starts; that rerun makes the box
    # anew (its placeholder is the preset's default), dropping anything typed into the old one.
    iterations = page.get_by_label("Iterations")
    expect(iterations).to_have_attribute("placeholder", str(get_preset("tiny-vqgan-untrained").defaults["iterations"]),
                                         timeout=TIMEOUT_MS)
    idle(page)
    page.get_by_text("Advanced options").click()
    iterations.fill("30")
    expect(iterations).to_have_value("30")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text(re.compile(r"Job \d+ is queued at position \d+"))).to_be_visible(timeout=TIMEOUT_MS)
    job = store.jobs(submitter=VISITOR, limit=1)[0]
    assert (job.prompt, job.preset, job.total) == (PROMPT, "tiny-vqgan-untrained", 30)
    expect(page.get_by_role("heading", name=f"Job {job.id} (tiny-vqgan-untrained)")).to_be_visible()
    # The view refreshes itself each second: waiting, then a progress bar, then the result.
    progress = page.get_by_test_id("stProgress").or_(page.get_by_text("Waiting in the queue at position"))
    download = page.get_by_role("button", name="Download GIF")
    expect(progress.or_(download).first).to_be_visible(timeout=TIMEOUT_MS)
    wait_for(service, [job], download)
    assert store.get(job.id).status == "done"
    expect(page.get_by_role("button", name="Download PNG")).to_be_visible()
    expect(page.get_by_text("the optimisation")).to_be_visible()
    expect(page.get_by_test_id("stImage")).to_have_count(2)
    # The finished status triggers a full rerun, which lists the job under the visitor's recent jobs.
    expect(page.get_by_role("heading", name="Your recent jobs")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Show")).to_have_count(1)
    no_exception(page)
    shot(page, "generate", "generate")

    # Previous inferences: the new prompt is listed with the two seeded images.
    go_to(page, "Previous inferences")
    expect(page.get_by_text("3 matching · page 1 of 1")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(PROMPT, exact=True)).to_be_visible()
    expect(page.get_by_text(SEED_PROMPT, exact=True)).to_have_count(2)
    expect(page.get_by_role("button", name="Details")).to_have_count(3)
    no_exception(page)
    shot(page, "gallery", "gallery")

    # Vote: the seeded pair (the only two images of one prompt), presets hidden until the vote.
    go_to(page, "Vote")
    expect(page.get_by_test_id("stImage")).to_have_count(2, timeout=TIMEOUT_MS)
    expect(page.get_by_text(SEED_PROMPT, exact=True)).to_have_count(2)
    expect(page.get_by_text("Left was:")).to_have_count(0)
    for label in ["Left is better", "Right is better", "About the same", "Both bad"]:
        expect(page.get_by_role("button", name=label)).to_be_visible()
    no_exception(page)
    shot(page, "vote", "vote")
    page.get_by_role("button", name="Left is better").click()
    expect(page.get_by_text("Recorded: left is better.")).to_be_visible(timeout=TIMEOUT_MS)
    left = page.get_by_text(re.compile(r"^Left was: tiny-(vqgan|gumbel)-untrained$"))
    right = page.get_by_text(re.compile(r"^Right was: tiny-(vqgan|gumbel)-untrained$"))
    expect(left).to_be_visible()
    expect(right).to_be_visible()
    assert {left.inner_text().split(": ")[1], right.inner_text().split(": ")[1]} == \
        {"tiny-vqgan-untrained", "tiny-gumbel-untrained"}
    expect(page.get_by_role("button", name="Next pair")).to_be_visible()
    records = store.vote_records()
    assert len(records) == 1
    no_exception(page)
    shot(page, "vote-recorded")
    winner = left.inner_text().split(": ")[1]

    # Leaderboard: the one vote ranks the two presets.
    go_to(page, "Leaderboard")
    expect(page.get_by_text(re.compile(r"^1 votes\."))).to_be_visible(timeout=TIMEOUT_MS)
    table = page.get_by_test_id("stDataFrame")
    expect(table).to_be_visible()
    # The grid draws on a canvas, so its rows are read from its "Download as CSV" button.
    table.hover()
    with page.expect_download() as download_info:
        table.get_by_role("button", name="Download as CSV").click()
    rows = list(csv.DictReader(download_info.value.path().read_text(encoding="utf-8-sig").splitlines()))
    assert [(r["rank"], r["preset"], r["votes"]) for r in rows] == [
        ("1", winner, "1"), ("2", ({"tiny-vqgan-untrained", "tiny-gumbel-untrained"} - {winner}).pop(), "1")], rows
    no_exception(page)
    shot(page, "leaderboard", "leaderboard")

    # Queue: three finished jobs, the executor seen, the latest jobs listed.
    go_to(page, "Queue")
    done = page.get_by_test_id("stMetric").filter(has_text="done")
    expect(done).to_be_visible(timeout=TIMEOUT_MS)
    assert int(done.get_by_test_id("stMetricValue").inner_text()) >= 3
    expect(page.get_by_text("No executor is running")).to_have_count(0)
    no_exception(page)
    shot(page, "queue", "queue")

    assert not errors, errors
    page.close()


def test_no_address_carries_the_visitor(service, browser):
    """The visitor id used to ride in every address (?v=), so a shared link handed over the visitor's
    jobs; now the cookie says who they are and no page's address names them."""
    base = service[0]
    key = "c" * 43
    page = visitor_page(browser, base, key, viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
    idle(page)
    try:
        for name in ("Vote", "Queue", "Previous inferences", "Generate"):
            go_to(page, name)
            idle(page)
            assert "?" not in page.url and key not in page.url, f"{name}: {page.url}"
    finally:
        page.close()


def test_a_digits_job_from_the_browser_shows_its_denoising(service, browser):
    """The diffusion family through the real page: its own options (no cutouts), a grid of samples."""
    base, store = service[:2]
    visitor = visitor_of("b" * 43)
    page = visitor_page(browser, base, "b" * 43, viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
    choose_preset(page, "digits")
    page.get_by_label("Prompt").fill("the digit seven")
    page.get_by_text("Advanced options for diffusion presets").click()
    expect(page.get_by_label("Cutouts")).to_have_count(0)
    page.get_by_role("textbox", name="Steps").fill("12")
    page.get_by_role("textbox", name="Samples").fill("4")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text(re.compile(r"Job \d+ is queued at position \d+"))).to_be_visible(timeout=TIMEOUT_MS)
    job = store.jobs(submitter=visitor, limit=1)[0]
    assert (job.preset, job.total, job.spec["num_samples"]) == ("digits", 12, 4)
    wait_for(service, [job], page.get_by_role("button", name="Download GIF"))
    expect(page.get_by_text("the denoising")).to_be_visible()
    result = store.result(job.id)
    assert (result.width, result.height) == (32, 32) and result.parameters["family"] == "diffusion"
    no_exception(page)
    shot(page, "generate-digits")


def test_a_flowers_gan_job_from_the_browser(service, browser):
    """The gan family through the real page: frames, samples and noise scale, no sampler; a grid."""
    base, store = service[:2]
    visitor = visitor_of("g" * 43)
    page = visitor_page(browser, base, "g" * 43, viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
    choose_preset(page, "flowers-gan")
    page.get_by_label("Prompt").fill("this flower has five pink petals and a yellow center")
    page.get_by_text("Advanced options for gan presets").click()
    expect(page.get_by_label("Sampler")).to_have_count(0)
    page.get_by_role("textbox", name="Frames").fill("6")
    page.get_by_role("textbox", name="Samples").fill("4")
    page.get_by_role("textbox", name="Noise scale").fill("0.5")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text(re.compile(r"Job \d+ is queued at position \d+"))).to_be_visible(timeout=TIMEOUT_MS)
    job = store.jobs(submitter=visitor, limit=1)[0]
    assert (job.preset, job.total, job.spec["num_samples"], job.spec["noise_scale"]) == ("flowers-gan", 6, 4, 0.5)
    wait_for(service, [job], page.get_by_role("button", name="Download GIF"))
    result = store.result(job.id)
    # Each sample is 64x64 (the size reported); the PNG is their 2x2 grid.
    grid = Image.open(io.BytesIO(result.png))
    assert (result.width, result.parameters["family"]) == (64, "gan") and grid.width > 2 * 64
    no_exception(page)
    shot(page, "generate-flowers-gan")


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


def test_what_the_browser_used_to_drop_is_refused_with_a_line(service, browser):
    """What AppTest cannot show, because the browser did it: the upload widget dropped an SVG or an
    image over 10 MB without telling the server (the job was queued without it), a paste over the
    prompt's limit left the box empty, and the number box read 1e3 as 1. Each is now refused with one
    line, and nothing is queued."""
    base, store = service[:2]
    visitor = visitor_of("d" * 43)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    huge = png.getvalue() + b"\0" * (11 * 2**20)
    page = visitor_page(browser, base, "d" * 43, viewport={"width": 1280, "height": 900})
    try:
        for upload, line in [(("drawing.svg", "image/svg+xml", SVG), "init_image: is not a readable image"),
                             (("huge.png", "image/png", huge), "init_image: is 11.0 MB; the limit is 10 MB")]:
            page.goto(f"{base}/")
            expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
            idle(page)
            page.get_by_label("Prompt").fill("a red circle")
            page.get_by_text("Advanced options").click()
            uploader = page.get_by_test_id("stFileUploader").filter(has_text="Start from an image")
            name, mime, content = upload
            uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
                files=[{"name": name, "mimeType": mime, "buffer": content}])
            expect(uploader.get_by_text(name)).to_be_visible(timeout=TIMEOUT_MS)
            expect(uploader.get_by_text(re.compile("not allowed|or smaller|error", re.I))).to_have_count(0)
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text(re.compile("^" + re.escape(line)))).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_text("Not submitted:")).to_be_visible()

        page.goto(f"{base}/")
        expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
        idle(page)
        prompt = page.get_by_label("Prompt")
        prompt.fill("a red circle " * 100)  # 1300 characters, as a paste sets them
        page.get_by_text("Advanced options").click()
        page.get_by_label("Iterations").fill("1e3")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text(re.compile("the prompt had 1299 characters and was cut to 1000"))).to_be_visible(
            timeout=TIMEOUT_MS)
        expect(prompt).to_have_value(("a red circle " * 100)[:1000].rstrip())
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text("iterations: must be a whole number, got '1e3'")).to_be_visible(timeout=TIMEOUT_MS)
        no_exception(page)
        shot(page, "generate-refused")
        assert store.jobs(submitter=visitor, limit=1) == []
    finally:
        page.close()


def wait_for(service, jobs, *done) -> None:
    """Each of `done` (locators that show a finished job) visible within JOB_TIMEOUT_MS; else fail
    with the jobs' statuses and the executor's log, which say why."""
    _, store, executor, exec_log = service
    try:
        for locator in done:
            expect(locator).to_be_visible(timeout=JOB_TIMEOUT_MS)
    except AssertionError:
        raise AssertionError(f"jobs {[(j.id, store.get(j.id).status) for j in jobs]}; executor alive: "
                             f"{executor.poll() is None}; log:\n{exec_log.read_text()}") from None


def choose_preset(page, name: str) -> None:
    preset = page.get_by_role("combobox", name="Preset")
    preset.click()
    page.get_by_role("option", name=name, exact=True).click()
    expect(preset).to_have_value(name)
    idle(page)  # the preset's rerun (with its guide) must end before the next click


def test_the_preset_guide_in_a_real_browser(service, browser):
    """Picking a world trained here shows its family, what it is good at, the words it knows and three
    example prompts; clicking one puts it in the prompt box."""
    from t2i.data import shapes
    from t2i.service.guide import examples
    from t2i.presets import get_preset

    base = service[0]
    page = visitor_page(browser, base, "h" * 43, viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{base}/")
        expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
        idle(page)
        choose_preset(page, "tiny-vqgan-untrained")
        expect(page.get_by_text("Words it knows")).to_have_count(0)
        choose_preset(page, "shapes")
        expect(page.get_by_text(re.compile(r"^Family: guided .*Good at: one or two coloured"))).to_be_visible()
        page.get_by_text("Words it knows").click()
        expect(page.get_by_text(f"Colours: {', '.join(shapes.COLOURS)}")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text(f"Shapes: {', '.join(shapes.SHAPES)}")).to_be_visible()
        expected = examples(get_preset("shapes"))
        for example in expected:
            expect(page.get_by_role("button", name=example, exact=True)).to_be_visible()
        page.get_by_role("button", name=expected[1], exact=True).click()
        expect(page.get_by_label("Prompt")).to_have_value(expected[1], timeout=TIMEOUT_MS)
        no_exception(page)
        shot(page, "guide", "guide")
    finally:
        page.close()


def test_a_compare_group_from_the_browser(service, browser):
    """Compare presets: one prompt and seed on shapes and shapes-ldm, the results side by side with
    their presets hidden, the visitor picks the best, the presets are shown and the votes recorded."""
    base, store = service[:2]
    visitor = visitor_of("k" * 43)
    page = visitor_page(browser, base, "k" * 43, viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{base}/")
        expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
        idle(page)
        choose_preset(page, "shapes")
        page.get_by_text("Compare presets").click()
        others = page.get_by_role("combobox", name="Compare shapes with")
        expect(others).to_be_visible(timeout=TIMEOUT_MS)
        idle(page)
        others.click()
        page.get_by_role("option", name="shapes-ldm", exact=True).click()
        page.keyboard.press("Escape")
        idle(page)
        expect(page.get_by_text("Advanced options for guided and diffusion presets")).to_be_visible(timeout=TIMEOUT_MS)
        page.get_by_role("button", name="a large red circle on the left", exact=True).click()
        prompt = page.get_by_label("Prompt")
        expect(prompt).to_have_value("a large red circle on the left", timeout=TIMEOUT_MS)
        idle(page)
        page.get_by_text("Advanced options for guided and diffusion presets").click()
        page.get_by_label("Iterations").fill("20")      # shapes (guided)
        page.get_by_role("textbox", name="Steps").fill("20")   # shapes-ldm (diffusion)
        page.get_by_label("Seed (empty: random; one for the whole group)").fill("3")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text("2 jobs are queued as a compare group")).to_be_visible(timeout=TIMEOUT_MS)
        # in label order (A, B): a shuffle seeded by the group, not the ids' order
        jobs = [job for _, job in compare.labelled(store.group(store.jobs(submitter=visitor, limit=1)[0].group_id))]
        assert sorted(j.preset for j in jobs) == ["shapes", "shapes-ldm"]
        assert {(j.prompt, j.spec["seed"], j.total) for j in jobs} == {("a large red circle on the left", 3, 20)}
        expect(page.get_by_role("heading", name="Comparing 2 presets")).to_be_visible()
        for label in "AB":
            expect(page.get_by_role("heading", name=label, exact=True)).to_be_visible()
        best = page.get_by_role("button", name="A is the best")
        wait_for(service, jobs, best, page.get_by_role("button", name="B is the best"))
        expect(page.get_by_test_id("stImage")).to_have_count(2)
        expect(page.get_by_text(re.compile(r"^[AB] was: "))).to_have_count(0)
        no_exception(page)
        shot(page, "compare-before-the-vote")
        before = len(store.vote_records())
        best.click()
        expect(page.get_by_text("Recorded: A is the best (1 pairwise vote).")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text(f"A was: {jobs[0].preset}", exact=True)).to_be_visible()
        expect(page.get_by_text(f"B was: {jobs[1].preset}", exact=True)).to_be_visible()
        records = store.vote_records()
        assert len(records) == before + 1
        assert (records[-1]["left_preset"], records[-1]["right_preset"], records[-1]["choice"]) == \
            (jobs[0].preset, jobs[1].preset, "left")
        no_exception(page)
        shot(page, "compare", "compare")
    finally:
        page.close()
