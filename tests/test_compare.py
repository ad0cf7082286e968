"""Compare presets (issue 19): queue.submit_group (validation, seed, per-family fields, limits), the
group's view and vote (t2i/service/compare.py) on both backends, and the Generate page's compare view through
AppTest with the real executor finishing the jobs."""

from __future__ import annotations

import io
import random

import pytest
from streamlit.testing.v1 import AppTest

from t2i.service import compare
from t2i.errors import PresetError
from t2i.paths import ROOT
from t2i.service.queue import QueueLimit, SubmitPolicy, submit_group
from t2i.service.ranking import VotePolicy, fit_bradley_terry
from t2i.spec import SpecError
from t2i.store import Result, open_store
from t2i.web.visitor import COOKIE, visitor_of
from test_pages import button, run_queue, texts
from test_store import make_result

VQGAN, GUMBEL, GAN = "tiny-vqgan-untrained", "tiny-gumbel-untrained", "tiny-gan-untrained"
CHEAP = dict(iterations=2, cutn=2, save_every=1)       # the guided presets' iterations and cutouts
WITH_GAN = dict(CHEAP, steps=2)                         # and the gan preset's frames
ADDRESS = "198.51.100.60"


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def total(store) -> int:
    return sum(store.counts().values())


def finish(store, job_id: int) -> None:
    """What an executor does at the end of a job, through the store's own calls (fake image bytes)."""
    job = store.claim("w", 300.0, batch_key=store.get(job_id).batch_key)
    assert job.id == job_id
    assert store.complete(job.lease, make_result(job_id))


# --- queue.submit_group ---------------------------------------------------------------------------

def test_a_group_is_one_prompt_and_one_seed_on_every_preset(store):
    ids = submit_group(store, "a red circle", [VQGAN, GUMBEL, GAN], submitter="v", **WITH_GAN)
    jobs = store.group(ids[0])
    assert [j.id for j in jobs] == sorted(ids) and {j.group_id for j in jobs} == {min(ids)}
    assert sorted(j.preset for j in jobs) == sorted([VQGAN, GUMBEL, GAN])
    assert {j.prompt for j in jobs} == {"a red circle"} and {j.submitter for j in jobs} == {"v"}
    seeds = {j.spec["seed"] for j in jobs}
    assert len(seeds) == 1 and seeds.pop() is not None   # none given: one picked for all
    # Each family's option went to its presets only; the others kept their defaults.
    by_preset = {j.preset: j for j in jobs}
    assert (by_preset[VQGAN].total, by_preset[VQGAN].spec["cutn"], by_preset[GAN].total) == (2, 2, 2)
    assert "iterations" not in by_preset[GAN].spec and "steps" not in by_preset[VQGAN].spec
    given = submit_group(store, "a cat", [VQGAN, GAN], seed="77", iterations=2)
    assert {store.get(i).spec["seed"] for i in given} == {77}
    assert {store.get(i).spec["width"] for i in given} == {64}


def test_the_group_order_is_random_so_labels_do_not_follow_the_choice(store):
    firsts = {store.group(submit_group(store, "a cat", [VQGAN, GUMBEL], rng=random.Random(k), **CHEAP)[0])[0].preset
              for k in range(8)}
    assert firsts == {VQGAN, GUMBEL}


@pytest.mark.parametrize("presets,fields,error,line", [
    ([VQGAN], {}, SpecError, "presets: compare 2 to 4 presets, got 1"),
    ([VQGAN, GUMBEL, GAN, "shapes", "digits"], {}, SpecError, "presets: compare 2 to 4 presets, got 5"),
    ([VQGAN, "no-such-preset"], {}, PresetError, "unknown preset 'no-such-preset'"),
    ([VQGAN, VQGAN], {}, SpecError, f"presets: each preset once, got {VQGAN} more than once"),
    ([VQGAN, GAN], {"guidance": "3"}, SpecError,
     "guidance: does not apply to any chosen preset's family (gan, guided)"),
    ([VQGAN, GAN], {"width": "5000"}, SpecError, f"{VQGAN}: width: must be between 64 and"),
    ([VQGAN, GAN], {"iterations": "0"}, SpecError, f"{VQGAN}: iterations: must be between 1"),
    ([VQGAN, GAN], {"seed": "-1"}, SpecError, f"{VQGAN}: seed: must be between 0 and"),
], ids=["one", "five", "unknown", "twice", "no-family", "width", "iterations", "seed"])
def test_bad_groups_are_refused_with_one_line_and_insert_nothing(store, presets, fields, error, line):
    with pytest.raises(error) as refused:
        submit_group(store, "a cat", presets, **fields)
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)
    assert total(store) == 0


def test_an_empty_prompt_is_refused_once_not_per_preset(store):
    with pytest.raises(SpecError, match="^prompt: is empty"):
        submit_group(store, "  ", [VQGAN, GAN])
    assert total(store) == 0


def test_the_limits_count_every_job_of_the_group(store):
    policy = SubmitPolicy()
    assert policy.max_active_per_address == 4   # a group of four fits an idle address
    ids = submit_group(store, "a cat", [VQGAN, GUMBEL, GAN, "tiny-diffusion-untrained"], address=ADDRESS,
                       policy=policy, **WITH_GAN)
    assert len(ids) == 4
    with pytest.raises(QueueLimit) as refused:
        submit_group(store, "a cat", [VQGAN, GUMBEL], address=ADDRESS, policy=policy, **CHEAP)
    assert str(refused.value) == ("your address may have 4 jobs queued or running and this group adds 2; wait for "
                                  "one to finish or cancel one, or compare fewer presets")
    assert total(store) == 4
    store.cancel(ids[0])
    store.cancel(ids[1])                 # two places free: a group of two fits again
    assert len(submit_group(store, "a cat", [VQGAN, GUMBEL], address=ADDRESS, policy=policy, **CHEAP)) == 2
    assert len(submit_group(store, "a cat", [VQGAN, GUMBEL], address="198.51.100.61", policy=policy, **CHEAP)) == 2


def test_a_group_larger_than_the_address_allowance_says_how_many_fit(store):
    policy = SubmitPolicy(max_active_per_address=3)
    with pytest.raises(QueueLimit, match="^your address may have 3 jobs queued or running; compare at most 3 presets$"):
        submit_group(store, "a cat", [VQGAN, GUMBEL, GAN, "shapes"], address=ADDRESS, policy=policy, **WITH_GAN)
    per_minute = SubmitPolicy(max_per_minute=3)
    submit_group(store, "a cat", [VQGAN, GUMBEL], address=ADDRESS, policy=per_minute, **CHEAP)
    with pytest.raises(QueueLimit, match="^at most 3 submissions a minute, and a group of 2 counts 2"):
        submit_group(store, "a cat", [VQGAN, GUMBEL], address=ADDRESS, policy=per_minute, **CHEAP)
    assert total(store) == 2


# --- t2i/service/compare.py: the view and the vote --------------------------------------------------------

def test_presets_stay_hidden_until_the_visitor_votes_and_the_vote_is_pairwise(store):
    ids = submit_group(store, "a red circle", [VQGAN, GUMBEL, GAN], **WITH_GAN)
    group = min(ids)
    v = compare.view(store, "voter", group)
    assert [c.label for c in v.columns] == ["A", "B", "C"] and v.active and not v.can_vote and not v.revealed
    assert [c.progress.label for c in v.columns] == ["queued"] * 3
    jobs = [c.job for c in v.columns]   # in label order
    finish(store, jobs[0].id)
    assert not compare.view(store, "voter", group).can_vote       # one finished image: nothing to compare
    finish(store, jobs[1].id)
    v = compare.view(store, "voter", group)
    assert v.can_vote and not v.revealed and [c.label for c in v.done] == ["A", "B"]
    before = fit_bradley_terry(store.vote_records())
    outcome = compare.vote_group(store, "voter", ADDRESS, [c.job for c in v.columns], jobs[1].id, VotePolicy())
    assert (outcome.recorded, outcome.already, outcome.limit) == (1, 0, None)   # C was not finished
    records = store.vote_records()
    assert [(r["left_preset"], r["right_preset"], r["choice"], r["address"]) for r in records] == \
        [(jobs[1].preset, jobs[0].preset, "left", ADDRESS)]
    after = fit_bradley_terry(records)
    assert before == [] and after[0].preset == jobs[1].preset and after[0].score > after[1].score
    v = compare.view(store, "voter", group)
    assert v.revealed and not v.can_vote
    assert not compare.view(store, "someone else", group).revealed   # revealed to the voter only
    again = compare.vote_group(store, "voter", ADDRESS, [c.job for c in v.columns], jobs[0].id, VotePolicy())
    assert (again.recorded, again.already) == (0, 1) and len(store.vote_records()) == 1


def test_pick_the_best_of_four_is_three_votes_and_all_bad_every_pair(store):
    ids = submit_group(store, "a cat", [VQGAN, GUMBEL, GAN, "shapes"], **WITH_GAN)
    jobs = store.group(min(ids))
    for job in jobs:
        finish(store, job.id)
    jobs = store.group(min(ids))
    best = compare.vote_group(store, "v1", "198.51.100.70", jobs, jobs[2].id, VotePolicy())
    assert best.recorded == 3
    assert {(r["left_preset"], r["choice"]) for r in store.vote_records()} == {(jobs[2].preset, "left")}
    ratings = fit_bradley_terry(store.vote_records())
    assert ratings[0].preset == jobs[2].preset and ratings[0].wins == 3
    bad = compare.vote_group(store, "v2", "198.51.100.71", jobs, None, VotePolicy())
    assert bad.recorded == 6 and [r["choice"] for r in store.vote_records()].count("both_bad") == 6
    assert [r.score for r in fit_bradley_terry(store.vote_records())] == [r.score for r in ratings]  # ranks nothing
    with pytest.raises(ValueError, match="not a finished image of this group"):
        compare.vote_group(store, "v3", "198.51.100.72", jobs, 10**9, VotePolicy())


def test_a_vote_limit_part_way_keeps_the_votes_before_it(store):
    ids = submit_group(store, "a cat", [VQGAN, GUMBEL, GAN], **WITH_GAN)
    for job_id in ids:
        finish(store, job_id)
    jobs = store.group(min(ids))
    outcome = compare.vote_group(store, "v", ADDRESS, jobs, jobs[0].id, VotePolicy(max_per_minute=1))
    assert (outcome.recorded, outcome.limit) == (1, "at most 1 votes a minute from one address; please wait a moment")
    assert len(store.vote_records()) == 1 and compare.view(store, "v", min(ids)).revealed


def test_a_group_that_can_never_be_voted_on_shows_its_presets(store):
    ids = submit_group(store, "a cat", [VQGAN, GUMBEL], **CHEAP)
    finish(store, ids[0])
    store.cancel(ids[1])
    v = compare.view(store, "v", min(ids))
    assert not v.active and not v.can_vote and v.revealed
    assert compare.view(store, "v", 10**9) is None


# --- blind: labels not in id order, presets hidden on the other pages, images without their text ---------

def test_labels_do_not_follow_the_job_ids_and_stay_the_same_for_every_rerun_and_visitor(store):
    """The Queue page and the gallery show ids: labels in id order would tie each label to a row there."""
    from test_store_groups import item

    groups = [store.submit_group([item("p-a"), item("p-b"), item("p-c")]) for _ in range(12)]
    in_id_order = 0
    for ids in groups:
        seen = [[c.job.id for c in compare.view(store, voter, ids[0]).columns] for voter in ("v1", "v2", "v1")]
        assert seen[0] == seen[1] == seen[2] and sorted(seen[0]) == ids
        assert [c.label for c in compare.view(store, "v1", ids[0]).columns] == ["A", "B", "C"]
        in_id_order += seen[0] == ids
    assert in_id_order < len(groups)   # one in six per group by chance; all twelve: one in two billion


def test_a_groups_presets_are_blind_to_a_visitor_until_they_vote(store):
    ids = submit_group(store, "a red circle", [VQGAN, GUMBEL, GAN], **WITH_GAN)
    lone = store.submit(store.get(ids[0]).spec, batch_key="lone", total=2)
    group = min(ids)
    assert compare.blind_groups(store, "v", [None, group, group]) == {group}   # queued: a vote is to come
    for job_id in ids:
        finish(store, job_id)
    assert compare.blind_groups(store, "v", [group]) == {group} == compare.blind_groups(store, "w", [group])
    assert store.get(lone).group_id is None and compare.blind_groups(store, "v", [None]) == set()
    jobs = store.group(group)
    compare.vote_group(store, "v", ADDRESS, jobs, jobs[0].id, VotePolicy())
    assert compare.blind_groups(store, "v", [group]) == set()          # voted: shown to this visitor
    assert compare.blind_groups(store, "w", [group]) == {group}        # and only to them
    assert compare.blind_text(f"weights for {GAN} are missing", GAN) == "weights for (the preset) are missing"
    assert compare.blind_text(None, GAN) is None


def test_a_group_that_can_never_be_voted_on_is_not_blind(store):
    ids = submit_group(store, "a cat", [VQGAN, GUMBEL], **CHEAP)
    finish(store, ids[0])
    store.cancel(ids[1])
    assert compare.blind_groups(store, "v", [min(ids)]) == set()


def test_the_image_shown_before_the_vote_carries_no_text_naming_the_preset():
    from PIL import Image

    from t2i.output import render

    image = Image.new("RGB", (24, 16), (200, 30, 40))
    png = render.png_bytes(image, {"preset": VQGAN, "family": "guided", "prompt": "a red circle"})
    assert VQGAN.encode() in png and render.read_parameters(png)["preset"] == VQGAN
    bare = compare.pixels_only(png)
    assert VQGAN.encode() not in bare and b"guided" not in bare and render.read_parameters(bare) is None
    with Image.open(io.BytesIO(bare)) as shown:
        assert shown.size == (24, 16) and shown.convert("RGB").getpixel((3, 3)) == (200, 30, 40)
    cut = compare.pixels_only(png[:png.index(b"iTXt") + 20])   # a file cut inside a text chunk: no failure,
    assert cut.startswith(png[:33]) and not any(t in cut for t in (b"iTXt", b"tEXt", b"zTXt"))  # no text either


# --- the Generate page ----------------------------------------------------------------------------

KEY = "5" * 43


class Client:
    """The browser handshake AppTest lacks (as tests/test_pages.py's): cookies and the peer address."""

    def __init__(self):
        self.cookies, self.headers, self.remote_ip = {COOKIE: KEY}, [], ADDRESS


@pytest.fixture
def page(tmp_path, monkeypatch):
    """A Generate page on a database of its own; yields (new session, store, url)."""
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    monkeypatch.setenv("T2I_DB", url)
    client = Client()
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: client)
    store = open_store(url)

    def make():
        at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        return at
    yield make, store, url
    store.close()


def compare_form(at, others, prompt="a red circle"):
    at.selectbox(key="preset").select(VQGAN).run()
    at.toggle(key="compare_on").set_value(True).run()
    select = at.multiselect(key="compare_with")
    assert VQGAN not in select.options and select.max_selections == 3
    for other in others:
        select.select(other)
    at.run()
    at.text_area(key="prompt").input(prompt)
    return at


@pytest.mark.slow
def test_the_page_submits_a_group_shows_each_columns_progress_then_the_vote_reveals_the_presets(page):
    make, store, url = page
    at = compare_form(make(), [GUMBEL, GAN])
    assert at.expander[0].label.startswith("Advanced options for guided and gan presets")
    at.text_input(key="iterations").input("2")
    at.text_input(key="cutn").input("2")
    at.text_input(key="steps").input("2")
    at.text_input(key="seed").input("11")
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    jobs = [job for _, job in compare.labelled(store.group(store.jobs(limit=1)[0].group_id))]   # A, B, C
    assert sorted(j.preset for j in jobs) == sorted([VQGAN, GUMBEL, GAN])
    assert {(j.prompt, j.spec["seed"], j.submitter) for j in jobs} == {("a red circle", 11, visitor_of(KEY))}
    assert [s.value for s in at.success] == [f"3 jobs are queued as a compare group "
                                             f"({', '.join(f'#{j.id}' for j in sorted(jobs, key=lambda j: j.id))})."]
    assert [m.value for m in at.markdown if m.value.startswith("####")] == ["#### A", "#### B", "#### C"]
    assert len(at.info) == 3 and all("Waiting in the queue at position" in i.value for i in at.info)
    assert not [t for t in texts(at) if " was: " in t]

    # Column B running: its own progress bar; A and C still wait.
    running = store.claim("page-test", 300.0, batch_key=jobs[1].batch_key)
    assert running.id == jobs[1].id
    assert store.progress(running.lease, 1, 0.5).alive
    at.run()
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith(f"step 1 of {jobs[1].total}") and len(at.info) == 2
    assert store.release(running.lease)

    run_queue(url, cache_size=3)
    assert [store.get(j.id).status for j in jobs] == ["done"] * 3
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 3 and not [t for t in texts(at) if " was: " in t]
    labels = [b.label for b in at.button if b.label.endswith("is the best") or b.label == "All bad"]
    assert labels == ["A is the best", "B is the best", "C is the best", "All bad"]
    assert fit_bradley_terry(store.vote_records()) == []

    button(at, "B is the best").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Recorded: B is the best (2 pairwise votes)."]
    assert [t for t in texts(at) if " was: " in t] == [f"{label} was: {j.preset}" for label, j in zip("ABC", jobs)]
    assert not [b for b in at.button if b.label.endswith("is the best")]
    records = store.vote_records()
    assert sorted((r["left_preset"], r["right_preset"], r["choice"]) for r in records) == \
        sorted((jobs[1].preset, j.preset, "left") for j in (jobs[0], jobs[2]))
    assert fit_bradley_terry(records)[0].preset == jobs[1].preset
    # A new session of the same visitor (a reload) finds the group revealed: the votes say so.
    again = make()
    again.session_state["watching"] = jobs[0].id
    again.run()
    assert [t for t in texts(again) if " was: " in t] == [f"{label} was: {j.preset}" for label, j in zip("ABC", jobs)]


@pytest.mark.slow
def test_the_page_refuses_a_group_of_one_with_a_line(page):
    make, store, _ = page
    at = compare_form(make(), [])
    button(at, "Generate").click().run()
    assert not at.exception, at.exception
    assert "presets: compare 2 to 4 presets, got 1" in texts(at) and not at.success
    assert total(store) == 0


@pytest.mark.slow
def test_the_page_refuses_a_group_that_does_not_fit_the_address_limit(page, monkeypatch):
    make, store, _ = page
    monkeypatch.setenv("T2I_MAX_ACTIVE_PER_ADDRESS", "4")
    at = compare_form(make(), [GUMBEL, GAN])
    button(at, "Generate").click().run()
    assert len(at.success) == 1 and total(store) == 3
    at = compare_form(make(), [GUMBEL], prompt="a blue square")
    button(at, "Generate").click().run()
    assert not at.exception and not at.success
    assert ("your address may have 4 jobs queued or running and this group adds 2; wait for one to finish or "
            "cancel one, or compare fewer presets") in texts(at)
    assert total(store) == 3


@pytest.mark.slow
def test_the_single_job_flow_is_unchanged_when_compare_is_off(page):
    make, store, _ = page
    at = make()
    at.selectbox(key="preset").select(GAN).run()
    assert not at.get("multiselect")
    at.text_area(key="prompt").input("a red circle")
    at.text_input(key="steps").input("2")
    button(at, "Generate").click().run()
    (job,) = store.jobs()
    assert (job.preset, job.total, job.group_id) == (GAN, 2, None)
    assert any(f"Job {job.id} is queued at position" in s.value for s in at.success)


def finish_with_image(store, job_id: int) -> None:
    """finish() with a real image: the gallery decodes what it shows."""
    from PIL import Image

    from t2i.output import render

    job = store.claim("w", 300.0, batch_key=store.get(job_id).batch_key)
    image = Image.new("RGB", (64, 64), (job_id * 40 % 256, 90, 160))
    params = {"preset": job.preset, "prompt": job.prompt, "seed": 1}
    assert store.complete(job.lease, Result(job_id=job_id, gif=render.gif_bytes([image]), png=render.png_bytes(image, params),
                                            thumbnail=render.thumbnail_bytes(image), parameters=params, width=64,
                                            height=64, seed=1, created_at=0.0))


def shown(at) -> str:
    """Everything the page shows as text, its tables included."""
    tables = [str(d.value.to_dict()) for d in at.dataframe]
    return "\n".join([*texts(at), *(m.value for m in at.markdown), *(c.value for c in at.caption),
                      *(i.value for i in at.info), *(h.value for h in at.subheader), *tables])


@pytest.mark.slow
def test_the_queue_page_and_the_gallery_hide_a_groups_presets_until_the_visitor_votes(page):
    make, store, url = page
    voter = visitor_of(KEY)
    ids = submit_group(store, "a red circle", [VQGAN, GUMBEL], submitter=voter, **CHEAP)
    lone = submit_group(store, "a cat", [VQGAN, GAN], **WITH_GAN)   # still queued: blind too
    for job_id in ids:
        finish_with_image(store, job_id)
    at = make()
    at.switch_page("t2i/web/queue_page.py").run()
    assert not at.exception, at.exception
    (table,) = [d.value for d in at.dataframe if "preset" in d.value.columns]
    assert set(table["preset"]) == {compare.HIDDEN} and set(table["id"]) == {*ids, *lone}
    assert VQGAN not in shown(at) and GUMBEL not in shown(at)

    at.switch_page("t2i/web/gallery.py").run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption if c.value.startswith("#")]
    assert len(captions) == 2 and all(compare.HIDDEN in c for c in captions)
    assert VQGAN not in shown(at) and GUMBEL not in shown(at)
    at.selectbox(key="gallery_preset").select(VQGAN).run()   # being listed under a preset would name it
    assert not [c for c in at.caption if c.value.startswith("#")]
    assert any("1 left out here until you vote" in c.value for c in at.caption)   # the VQGAN one
    at.selectbox(key="gallery_preset").select("all").run()
    at.button(key=f"detail-{ids[0]}").click().run()
    assert not at.exception, at.exception
    assert VQGAN not in shown(at) and GUMBEL not in shown(at) and "blind comparison" in shown(at)
    assert not at.code and not at.json   # no parameters

    jobs = store.group(min(ids))
    compare.vote_group(store, voter, ADDRESS, jobs, jobs[0].id, VotePolicy())
    at = make()
    at.switch_page("t2i/web/queue_page.py").run()
    (table,) = [d.value for d in at.dataframe if "preset" in d.value.columns]
    presets = dict(zip(table["id"], table["preset"]))
    assert {presets[i] for i in ids} == {VQGAN, GUMBEL} and {presets[i] for i in lone} == {compare.HIDDEN}
    at.switch_page("t2i/web/gallery.py").run()
    captions = [c.value for c in at.caption if c.value.startswith("#")]
    assert len(captions) == 2 and not [c for c in captions if compare.HIDDEN in c]
