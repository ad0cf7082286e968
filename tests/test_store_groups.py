"""JobStore contract for compare groups (submit_group, group, done_groups, gallery by a preset list),
on both backends (store_url: SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from t2i.store import GroupItem, open_store
from t2i.store.base import Quota, QuotaReached
from test_store import make_result, spec


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def item(preset_tag: str, prompt: str = "a red circle") -> GroupItem:
    sp = spec(prompt)
    sp["preset"] = preset_tag  # the store keeps specs opaque: only prompt and preset are read
    return GroupItem(spec=sp, batch_key=f"{preset_tag}|key", total=5)


def finish(store, job_id: int) -> None:
    job = store.claim("w", 300.0, batch_key=store.get(job_id).batch_key)
    assert job.id == job_id
    assert store.complete(job.lease, make_result(job_id))


def test_a_group_is_inserted_together_and_found_by_its_first_id(store):
    lone = store.submit(spec(), batch_key="x", total=5)
    ids = store.submit_group([item("p-a"), item("p-b"), item("p-c")], submitter="v1")
    assert len(ids) == 3 and ids == sorted(ids) and lone < ids[0]
    jobs = store.group(ids[0])
    assert [j.id for j in jobs] == ids
    assert [j.preset for j in jobs] == ["p-a", "p-b", "p-c"]
    assert {j.group_id for j in jobs} == {ids[0]} and {j.submitter for j in jobs} == {"v1"}
    assert store.get(lone).group_id is None
    assert store.group(lone) == [] and store.group(10**9) == []
    assert store.counts()["queued"] == 4


def test_an_empty_group_is_refused(store):
    with pytest.raises(ValueError):
        store.submit_group([])
    assert store.counts()["queued"] == 0


def test_the_limits_count_every_job_of_a_group(store):
    quota = Quota(max_active=3, max_per_minute=10, max_queued=100)
    store.submit_limited(spec(), address="1.2.3.4", quota=quota, batch_key="x", total=5)
    with pytest.raises(QuotaReached) as reached:
        store.submit_group([item("p-a"), item("p-b"), item("p-c")], address="1.2.3.4", quota=quota)
    assert reached.value.bound == "active"
    assert store.counts()["queued"] == 1  # none of the group was inserted
    ids = store.submit_group([item("p-a"), item("p-b")], address="1.2.3.4", quota=quota)
    assert len(ids) == 2 and store.counts()["queued"] == 3
    # another address is not held back by this one's jobs
    assert len(store.submit_group([item("p-a"), item("p-b"), item("p-c")], address="5.6.7.8", quota=quota)) == 3
    with pytest.raises(QuotaReached):
        store.submit_limited(spec(), address="1.2.3.4", quota=quota, batch_key="x", total=5)


def test_the_queue_bound_counts_the_group_too(store):
    quota = Quota(max_active=10, max_per_minute=10, max_queued=3)
    store.submit(spec(), batch_key="x", total=5)
    with pytest.raises(QuotaReached) as reached:
        store.submit_group([item("p-a"), item("p-b"), item("p-c")], address="a", quota=quota)
    assert reached.value.bound == "queued" and store.counts()["queued"] == 1


def test_done_groups_and_done_jobs_of_a_group(store):
    first = store.submit_group([item("p-a"), item("p-b"), item("p-c")])
    second = store.submit_group([item("p-a"), item("p-b")])
    assert store.done_groups() == []
    finish(store, first[0])
    assert store.done_groups() == []          # one finished image is no pair
    finish(store, first[2])
    finish(store, second[0])
    assert store.done_groups() == [first[0]]
    assert sorted(store.done_jobs(group=first[0])) == [first[0], first[2]]
    assert store.done_jobs(group=second[0]) == [second[0]]
    assert store.done_groups(min_results=1, limit=5).count(second[0]) == 1


def test_the_gallery_filters_by_a_list_of_presets(store):
    ids = store.submit_group([item("p-a"), item("p-b"), item("p-c")])
    items, total = store.gallery(status=None, presets=["p-a", "p-c"])
    assert total == 2 and sorted(i["id"] for i in items) == [ids[0], ids[2]]
    assert {i["group_id"] for i in items} == {ids[0]}
    assert store.gallery(status=None, presets=[]) == ([], 0)
    assert store.gallery(status=None, presets=["p-b"], preset="p-a")[1] == 0
