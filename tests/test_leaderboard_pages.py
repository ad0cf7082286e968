"""The pages of issue 19's comparisons through Streamlit's AppTest, on SQLite files: the leaderboard's
family table and head-to-head matrix (hand-computed votes), the Vote page's same-group pairs, the
gallery's family filter, each sample of a several-sample result and a compare group's other results
(jobs made by the real executor)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from t2i.paths import ROOT
from t2i.presets import get_preset
from t2i.service.queue import submit_job
from t2i.spec import make_spec
from t2i.store import GroupItem, Result, open_store
from test_pages import Client, button, key, run_queue, texts

pytestmark = pytest.mark.slow  # AppTest runs of the app, as tests/test_pages.py's

GROUP_PROMPT = "a red circle"
GROUP = {"tiny-vqgan-untrained": dict(iterations=2, cutn=2), "tiny-diffusion-untrained": dict(steps=2),
         "tiny-gan-untrained": dict(steps=2)}


def job_spec(prompt: str, preset: str, **fields):
    p = get_preset(preset)
    return make_spec(prompt, preset, family=p.family, defaults=p.defaults, post=p.post, **fields)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A compare group of three families, a four-sample diffusion job and a lone gan job, all finished
    by the real executor."""
    url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 't2i.db'}"
    store = open_store(url)
    specs = [job_spec(GROUP_PROMPT, preset, seed=5, save_every=1, **fields) for preset, fields in GROUP.items()]
    group = store.submit_group([GroupItem(spec=s.to_dict(), batch_key=s.batch_key, total=s.total_steps) for s in specs])
    grid = submit_job(store, "a blue square", "tiny-diffusion-untrained", steps=2, num_samples=4, seed=6)
    lone = submit_job(store, "a green triangle", "tiny-gan-untrained", steps=2, seed=7)
    run_queue(url, cache_size=3)
    assert store.counts()["done"] == 5
    yield url, store, dict(group=group, grid=grid, lone=lone)
    store.close()


@pytest.fixture
def app(world, monkeypatch):
    url = world[0]
    monkeypatch.setenv("T2I_DB", url)
    client = Client()
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: client)

    def make(page: str, visitor: str = key("p")):
        client.be(visitor)
        at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
        at.run()
        at.switch_page(f"t2i/web/{page}.py").run()
        assert not at.exception, at.exception
        return at
    return make


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def image_captions(at) -> list[list[str]]:
    """The captions of each st.image call's images, in page order."""
    return [[img.caption for img in element.proto.imgs] for element in at.get("image")]


# --- Vote -------------------------------------------------------------------------------------------

def test_the_vote_page_offers_two_presets_of_one_compare_group_first(app, world):
    _, store, made = world
    group = made["group"]
    for visitor in "qrst":   # fresh visitors: each is offered a pair of the group, never the lone images
        at = app("vote", visitor=key(visitor))
        left, right = (store.get(j) for j in at.session_state["vote_pair"])
        assert left.group_id == right.group_id == group[0] and left.preset != right.preset
        assert texts(at).count(GROUP_PROMPT) == 2
        assert "From a compare group: one prompt and one seed, drawn by two presets." in captions(at)
        assert not [t for t in texts(at) if t.startswith("Left was")]                 # hidden until the vote
    button(at, "Right is better").click().run()
    assert f"Right was: {right.preset}" in texts(at)
    [record] = [r for r in store.vote_records() if {r["left_job"], r["right_job"]} == {left.id, right.id}]
    assert record["choice"] == "right"


# --- Gallery ----------------------------------------------------------------------------------------

def listed(at) -> list[tuple[int, str]]:
    """(id, preset) of each thumbnail's caption, "#id · preset · status..."."""
    found = []
    for c in captions(at):
        if c.startswith("#") and " · " in c:
            number, preset = c.split(" · ")[:2]
            found.append((int(number[1:]), preset))
    return found


def voted_on_the_group(store, made, visitor: str = key("p")) -> None:
    """A compare group's presets are hidden from a visitor until they vote on it (compare.blind_groups)."""
    from t2i.web.visitor import visitor_of

    store.vote(visitor_of(visitor), made["group"][0], made["group"][2], "tie")


def test_the_gallery_filters_by_family_and_narrows_the_preset_list(app, world):
    _, store, made = world
    voted_on_the_group(store, made)
    at = app("gallery")
    assert at.selectbox(key="gallery_family").options == ["all", "guided", "diffusion", "glide", "gan"]
    assert len(listed(at)) == 5
    at.selectbox(key="gallery_family").select("gan").run()
    assert sorted(listed(at)) == sorted([(made["group"][2], "tiny-gan-untrained"),
                                         (made["lone"], "tiny-gan-untrained")])
    assert at.selectbox(key="gallery_preset").options == ["all", "tiny-gan-untrained"]
    assert any(c.startswith("2 matching") for c in captions(at))
    # A preset chosen within the family, then another family: the preset falls back to "all".
    at.selectbox(key="gallery_preset").select("tiny-gan-untrained").run()
    assert len(listed(at)) == 2
    at.selectbox(key="gallery_family").select("diffusion").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="gallery_preset").value == "all"
    assert at.selectbox(key="gallery_preset").options == ["all", "tiny-diffusion-untrained"]
    assert sorted(listed(at)) == sorted([(made["group"][1], "tiny-diffusion-untrained"),
                                         (made["grid"], "tiny-diffusion-untrained")])
    at.selectbox(key="gallery_family").select("guided").run()
    assert listed(at) == [(made["group"][0], "tiny-vqgan-untrained")]
    # Back from a detail view, the family is still chosen.
    button(at, "Details").click().run()
    button(at, "Back to the gallery").click().run()
    assert at.selectbox(key="gallery_family").value == "guided"
    assert listed(at) == [(made["group"][0], "tiny-vqgan-untrained")]


def open_detail(at, job_id: int):
    [details] = [b for b in at.button if b.key == f"detail-{job_id}"]
    details.click().run()
    assert not at.exception, at.exception


def test_a_several_sample_result_shows_its_grid_and_each_sample(app, world):
    _, store, made = world
    at = app("gallery")
    open_detail(at, made["grid"])
    assert [f"sample {k} of 4" for k in range(1, 5)] in image_captions(at)
    assert "The 4 samples of the grid, one by one" in captions(at)
    assert ["a grid of 4 samples, each 32x32, seed 6"] in image_captions(at)
    # A single image has no sample row.
    at = app("gallery")
    open_detail(at, made["lone"])
    assert not [c for c in image_captions(at) if c and c[0].startswith("sample")]
    assert ["64x64, seed 7"] in image_captions(at)
    assert "The same prompt, other presets" not in [s.value for s in at.subheader]


def test_a_compare_groups_result_links_to_the_others(app, world):
    _, store, made = world
    first, second, third = made["group"]
    voted_on_the_group(store, made)
    at = app("gallery")
    open_detail(at, first)
    assert "The same prompt, other presets" in [s.value for s in at.subheader]
    assert f"Compare group #{first}: one prompt and one seed submitted to 3 presets." in captions(at)
    assert {b.label for b in at.button if (b.key or "").startswith("group-")} == {f"Open #{second}", f"Open #{third}"}
    assert f"#{third} · tiny-gan-untrained · done" in captions(at)
    button(at, f"Open #{third}").click().run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == f"#{third} · tiny-gan-untrained · done"
    assert {b.label for b in at.button if (b.key or "").startswith("group-")} == {f"Open #{first}", f"Open #{second}"}


# --- Leaderboard ------------------------------------------------------------------------------------

def finished(store, preset: str, prompt: str = "p") -> int:
    """A finished job; its image is never drawn by the leaderboard. A preset without a YAML file (one
    removed since) goes in as such: the store keeps specs opaque."""
    spec = job_spec(prompt, "tiny-vqgan-untrained", iterations=1).to_dict()
    spec["preset"] = preset
    job_id = store.submit(spec, batch_key=preset, total=1)
    job = store.claim("w", 60, batch_key=preset)
    assert store.complete(job.lease, Result(job_id, b"g", b"p", b"t", {}, 8, 8, 1, 0.0))
    return job_id


def test_the_leaderboard_ranks_families_and_shows_head_to_head(tmp_path, monkeypatch):
    store = open_store(f"sqlite:///{tmp_path / 'votes.db'}")
    vq, gumbel, diff, gone = (finished(store, p) for p in ("tiny-vqgan-untrained", "tiny-gumbel-untrained",
                                                           "tiny-diffusion-untrained", "removed-preset"))
    votes = [(vq, diff, "left"), (diff, vq, "right"), (vq, diff, "right"),   # vqgan 2 of 3 against diffusion
             (gumbel, diff, "tie"),                                          # 1/2 of 1 each
             (vq, gumbel, "left"),                                           # guided against guided
             (gone, vq, "right"),                                            # a removed preset loses to vqgan
             (vq, diff, "both_bad")]                                         # no information
    for k, (left, right, choice) in enumerate(votes):
        assert store.vote(f"voter{k}", left, right, choice)
    monkeypatch.setenv("T2I_DB", f"sqlite:///{tmp_path / 'votes.db'}")
    at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
    at.run()
    at.switch_page("t2i/web/leaderboard.py").run()
    assert not at.exception, at.exception

    presets = at.dataframe[0].value
    assert presets["preset"][0] == "tiny-vqgan-untrained" and len(presets) == 4
    assert [s.value for s in at.subheader] == ["Families", "Head to head"]

    families, matrix = (t.value for t in at.table)
    # guided: 2 + 1/2 of 4 against diffusion and 1 of 1 against the removed preset's "unknown";
    # the guided-against-guided vote does not count for families.
    by_family = {row["family"]: row for _, row in families.iterrows()}
    assert set(by_family) == {"guided", "diffusion", "unknown"}
    assert families["family"].iloc[0] == "guided"
    assert {f: (int(r["votes"]), float(r["wins"])) for f, r in by_family.items()} == \
        {"guided": (5, 3.5), "diffusion": (4, 1.5), "unknown": (1, 0.0)}
    assert all(" to " in r["95% interval"] for r in by_family.values())

    cell = lambda row, column: matrix.loc[row, column]  # noqa: E731
    assert cell("tiny-vqgan-untrained", "tiny-diffusion-untrained") == "67% of 3"
    assert cell("tiny-diffusion-untrained", "tiny-vqgan-untrained") == "33% of 3"
    assert cell("tiny-gumbel-untrained", "tiny-diffusion-untrained") == "50% of 1"
    assert cell("tiny-vqgan-untrained", "tiny-gumbel-untrained") == "100% of 1"
    assert cell("removed-preset", "tiny-vqgan-untrained") == "0% of 1"
    assert cell("removed-preset", "tiny-diffusion-untrained") == ""                # never met
    assert cell("tiny-vqgan-untrained", "tiny-vqgan-untrained") == "—"
    assert list(matrix.index) == list(presets["preset"]) == list(matrix.columns)   # in the ranking's order
    store.close()
