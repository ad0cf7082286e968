"""The batched claim (claim_many) and the one-statement heartbeat (heartbeat_all), on both backends.

Every test takes `store_url` (conftest.py): each runs once on SQLite and once on PostgreSQL, on a
fresh database. Expired leases are made with a negative lease_seconds, never by sleeping.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from t2i.service.executor import ExecutorConfig
from t2i.service.leases import Heartbeat
from t2i.store import Beat, Lease, Result, open_store
from t2i.store.retry import StoreTrouble
from test_store import claim_concurrently

EXPIRED = -5.0   # lease_seconds that leave a lease already expired
LONG = 300.0     # a lease that cannot expire during a test


def submit(store, key: str = "k", prompt: str = "a job", **kw) -> int:
    return store.submit({"prompt": prompt, "preset": "p"}, batch_key=key, total=3, **kw)


def result(job_id: int) -> Result:
    return Result(job_id=job_id, gif=b"GIF", png=b"PNG", thumbnail=b"T", parameters={}, width=1, height=1,
                  seed=0, created_at=0.0)


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


# --- claim_many: order, limit, batch key ----------------------------------------------------

def test_claim_many_takes_the_head_job_and_others_of_its_key_in_queue_order(store):
    a1 = submit(store, "a")
    b1 = submit(store, "b", priority=1)
    a2 = submit(store, "a")
    b2 = submit(store, "b")
    b3 = submit(store, "b", priority=2)       # the head: the highest priority
    b4 = submit(store, "b")
    jobs = store.claim_many("w", LONG, 3)
    assert [j.id for j in jobs] == [b3, b1, b2]  # priority first, then age, all of the head's key
    for j in jobs:
        assert (j.status, j.worker_id, j.attempts, j.batch_key) == ("running", "w", 1, "b")
        assert j.lease_expires_at > time.time() + LONG / 2
        assert store.get(j.id).status == "running"
    assert [j.id for j in store.claim_many("w2", LONG, 5)] == [a1, a2]  # the oldest head now; fewer than n
    assert [j.id for j in store.claim_many("w3", LONG, 5)] == [b4]
    assert store.claim_many("w4", LONG, 5) == []
    assert store.counts()["running"] == 6


def test_claim_many_with_a_batch_key_takes_only_that_key_up_to_n(store):
    a = [submit(store, "a") for _ in range(4)]
    b = submit(store, "b", priority=9)
    jobs = store.claim_many("w", LONG, 3, batch_key="a")
    assert [j.id for j in jobs] == a[:3]
    assert [j.id for j in store.claim_many("w", LONG, 3, batch_key="a")] == a[3:]
    assert store.claim_many("w", LONG, 3, batch_key="a") == []
    assert store.claim_many("w", LONG, 3, batch_key="c") == []
    assert store.get(b).status == "queued"


def test_claim_many_of_none_takes_nothing_and_claim_is_one_of_it(store):
    ids = [submit(store) for _ in range(3)]
    assert store.claim_many("w", LONG, 0) == []
    assert store.counts()["queued"] == 3
    assert store.claim("w", LONG).id == ids[0]
    assert [j.id for j in store.claim_many("w", LONG, 1)] == [ids[1]]
    assert store.claim("w", LONG, batch_key="k").id == ids[2]
    assert store.claim("w", LONG) is None


# --- claims take turns across submitters (addresses) -------------------------------------------

def test_an_address_with_ten_jobs_queued_first_gets_one_then_the_next_address_goes(store):
    # One executor running one job at a time: it finishes A's first before it claims again.
    a = [submit(store, address="198.51.100.7") for _ in range(10)]
    b = submit(store, address="203.0.113.9")
    first = store.claim("w", LONG)
    assert first.id == a[0]
    assert store.complete(first.lease, result(first.id))
    assert store.claim("w", LONG).id == b          # second, not eleventh
    assert [store.claim("w", LONG).id for _ in a[1:]] == a[1:]  # then A's, in order
    assert store.claim("w", LONG) is None


def test_a_new_address_joins_the_running_batch_of_a_busy_one_and_keeps_its_key(store):
    a = [submit(store, address="198.51.100.7") for _ in range(10)]
    b = submit(store, address="203.0.113.9")
    other = submit(store, "other", address="192.0.2.1")
    jobs = store.claim_many("w", LONG, 3)
    assert sorted(j.id for j in jobs) == sorted([a[0], b, a[1]])  # B's before A's second
    assert {j.batch_key for j in jobs} == {"k"}
    assert [j.id for j in store.claim_many("w2", LONG, 3)] == [other]  # its own key: a head of its own
    joined = store.claim_many("w", LONG, 2, batch_key="k")
    assert [j.id for j in joined] == a[2:4]


# --- claim_many: the alone rule ---------------------------------------------------------------

def alone_jobs(store, n: int, key: str = "k") -> list[int]:
    """n jobs whose executor died while it ran them in one batch: each is now marked alone, all
    with the same batch key (the one a sweep gives them)."""
    ids = [submit(store, key, prompt=f"job {i}") for i in range(n)]
    first = store.claim_many("w-dead", EXPIRED, n)
    assert [j.id for j in first] == ids
    assert store.sweep() == (n, 0)
    assert all(store.get(i).alone for i in ids)
    assert len({store.get(i).batch_key for i in ids}) == 1
    return ids


def test_an_alone_job_is_claimed_by_itself_never_with_others_of_its_key(store):
    ids = alone_jobs(store, 3)
    later = submit(store, "k")
    first = store.claim_many("w-a", LONG, 8)
    assert [j.id for j in first] == [ids[0]] and first[0].alone
    # Nothing joins it: not another alone job of the same key, not a job of the original key.
    assert store.claim_many("w-a", LONG, 8, batch_key=first[0].batch_key) == []
    assert store.claim_many("w-a", LONG, 8, batch_key="k") == []
    # Other idle workers get the next alone jobs, each by itself too, then the ordinary job.
    assert [j.id for j in store.claim_many("w-b", LONG, 8)] == [ids[1]]
    assert [j.id for j in store.claim_many("w-c", LONG, 8)] == [ids[2]]
    assert [j.id for j in store.claim_many("w-d", LONG, 8)] == [later]
    assert store.counts()["queued"] == 0


def test_a_busy_worker_skips_alone_jobs_and_batches_the_ordinary_ones_behind_them(store):
    ids = alone_jobs(store, 2)
    submit(store, "x")
    assert store.claim("w-busy", LONG, batch_key="x") is not None   # w-busy runs a job now
    plain = [submit(store, "y") for _ in range(3)]
    assert [j.id for j in store.claim_many("w-busy", LONG, 4)] == plain
    assert [j.id for j in store.claim_many("w-idle", LONG, 4)] == [ids[0]]


# --- concurrency: exactly once -----------------------------------------------------------------

def test_concurrent_claim_many_gives_every_job_exactly_once_in_batches_of_one_key(store_url, store):
    n_jobs, n_threads = 120, 8
    keys = ("a", "b", "c")
    submitted = {submit(store, keys[i % 3], prompt=f"job {i}", priority=i % 2) for i in range(n_jobs)}
    rngs = [random.Random(k) for k in range(n_threads)]
    claims = claim_concurrently(store_url, n_threads,
                                lambda s, k: s.claim_many(f"w-{k}", LONG, rngs[k].randint(1, 7)))
    ids = [j.id for part in claims for batch in part for j in batch]
    assert len(ids) == len(set(ids)) == n_jobs, "a job was claimed twice or lost"
    assert set(ids) == submitted
    for k, part in enumerate(claims):
        for batch in part:
            assert len({j.batch_key for j in batch}) == 1, "one claim mixed batch keys"
            assert all(j.worker_id == f"w-{k}" and j.attempts == 1 for j in batch)
    assert store.counts()["running"] == n_jobs and store.counts()["queued"] == 0


# --- heartbeat_all --------------------------------------------------------------------------------

def test_heartbeat_all_extends_only_this_workers_current_leases(store):
    for _ in range(4):
        submit(store)
    mine = store.claim_many("w-a", EXPIRED, 3)
    theirs = store.claim("w-b", EXPIRED)
    before = {j.id: store.get(j.id).lease_expires_at for j in mine + [theirs]}
    stale = Lease(mine[0].id, "w-a", mine[0].attempts + 1)   # an attempt that is not the current one
    beats = store.heartbeat_all("w-a", [j.lease for j in mine[1:]] + [theirs.lease, stale], LONG)
    assert beats == {mine[0].id: Beat(False, False), mine[1].id: Beat(True, False), mine[2].id: Beat(True, False),
                     theirs.id: Beat(False, False)}
    for j in mine[1:]:
        assert store.get(j.id).lease_expires_at > time.time() + LONG / 2
    for j in (mine[0], theirs):  # the stale lease and the other worker's job were not touched
        assert store.get(j.id).lease_expires_at == pytest.approx(before[j.id])
    assert store.heartbeat_all("w-a", [], LONG) == {}
    # mine[0] was not extended (its lease was stale), so the sweep takes back all of w-a's jobs, and w-b's.
    assert store.sweep() == (4, 0)


def test_heartbeat_all_reports_lost_leases_and_cancel_requests(store):
    ids = [submit(store) for _ in range(5)]
    alive, finished, cancelled, asked, failed = store.claim_many("w", LONG, 5)
    assert store.complete(finished.lease, result(finished.id))
    assert store.cancel(cancelled.id) == "cancel_requested" and store.finish_cancelled(cancelled.lease)
    assert store.cancel(asked.id) == "cancel_requested"
    assert store.fail(failed.lease, "broken")
    beats = store.heartbeat_all("w", [j.lease for j in (alive, finished, cancelled, asked, failed)], LONG)
    assert beats == {alive.id: Beat(True, False), finished.id: Beat(False, False), cancelled.id: Beat(False, False),
                     asked.id: Beat(True, True), failed.id: Beat(False, False)}
    assert sorted(beats) == ids


def test_heartbeat_all_after_a_sweep_reports_every_job_of_the_dead_worker_lost(store):
    for _ in range(2):
        submit(store)
    jobs = store.claim_many("w", EXPIRED, 2)
    assert store.sweep() == (2, 0)
    assert store.heartbeat_all("w", [j.lease for j in jobs], LONG) == {j.id: Beat(False, False) for j in jobs}
    assert store.counts()["queued"] == 2


# --- the executor's heartbeat ----------------------------------------------------------------------

def test_the_executors_heartbeat_keeps_a_batch_alive_in_one_beat_and_notices_a_lost_job(store_url, store):
    ids = [submit(store) for _ in range(4)]
    jobs = store.claim_many("exec-1", EXPIRED, 4)  # leases already expired: only a beat saves them
    assert [j.id for j in jobs] == ids
    cfg = ExecutorConfig(db=store_url, worker_id="exec-1", lease=LONG)
    heart = Heartbeat(cfg, store, StoreTrouble(threading.Event(), 0.1))
    for j in jobs:
        heart.add(j.lease)
    assert store.fail(jobs[3].lease, "taken away")  # lost meanwhile
    heart.beat()
    for j in jobs[:3]:
        assert store.get(j.id).lease_expires_at > time.time() + LONG / 2
        assert not heart.lost(j.lease)
    assert heart.lost(jobs[3].lease)
    assert store.sweep() == (0, 0)  # nothing expired: the executor holds all three
    assert store.counts()["running"] == 3




# --- complete: the contract (on PostgreSQL one statement, on SQLite a transaction) ------------------

def running_with_frames(store, frames: int = 2):
    """A claimed job with `frames` progress frames stored."""
    job_id = submit(store)
    job = store.claim("w", LONG)
    assert job.id == job_id
    for step in range(frames):
        assert store.add_frame(job.lease, step, b"frame %d" % step)
    return job


def test_complete_marks_the_job_done_with_its_result_and_drops_the_frames(store):
    job = running_with_frames(store)
    assert store.complete(job.lease, result(job.id))
    done = store.get(job.id)
    assert (done.status, done.step, done.total, done.worker_id, done.attempts) == ("done", 3, 3, "w", 1)
    assert done.lease_expires_at is None and done.finished_at is not None
    stored = store.result(job.id)
    assert (stored.gif, stored.png, stored.thumbnail, stored.width, stored.seed) == (b"GIF", b"PNG", b"T", 1, 0)
    assert store.frames(job.id) == []


def test_complete_with_keep_frames_keeps_them(store):
    job = running_with_frames(store)
    assert store.complete(job.lease, result(job.id), keep_frames=True)
    assert store.get(job.id).status == "done"
    assert store.frames(job.id) == [(0, b"frame 0"), (1, b"frame 1")]


def test_complete_with_a_stale_lease_writes_nothing(store):
    job = running_with_frames(store)
    before = store.get(job.id)
    for stale in (Lease(job.id, "w", job.attempts + 1), Lease(job.id, "w-other", job.attempts),
                  Lease(job.id + 1000, "w", job.attempts)):
        assert store.complete(stale, result(job.id)) is False
    after = store.get(job.id)
    assert (after.status, after.step, after.finished_at) == ("running", 0, None)
    assert after.lease_expires_at == pytest.approx(before.lease_expires_at)
    assert store.result(job.id) is None
    assert store.frames(job.id) == [(0, b"frame 0"), (1, b"frame 1")]


def test_complete_after_the_job_was_swept_and_taken_again_leaves_the_new_holder_alone(store):
    submit(store)
    old = store.claim("w-old", EXPIRED)
    assert store.sweep() == (1, 0)
    new = store.claim("w-new", LONG)
    assert new.id == old.id and store.add_frame(new.lease, 0, b"new")
    assert store.complete(old.lease, result(old.id)) is False
    assert (store.get(new.id).status, store.get(new.id).worker_id) == ("running", "w-new")
    assert store.result(new.id) is None and store.frames(new.id) == [(0, b"new")]
    assert store.complete(new.lease, result(new.id))


def test_complete_twice_is_rejected_and_the_first_result_stays(store):
    job = running_with_frames(store)
    assert store.complete(job.lease, result(job.id))
    finished_at = store.get(job.id).finished_at
    second = Result(job_id=job.id, gif=b"OTHER", png=b"OTHER", thumbnail=b"O", parameters={"x": 1}, width=2,
                    height=2, seed=7, created_at=0.0)
    assert store.complete(job.lease, second) is False
    assert store.get(job.id).finished_at == pytest.approx(finished_at)
    assert (store.result(job.id).gif, store.result(job.id).seed) == (b"GIF", 0)


def test_a_complete_whose_result_cannot_be_written_leaves_the_job_running(store):
    job = running_with_frames(store)
    before = store.get(job.id)
    # A results row already there (written behind the store's back) makes complete's INSERT fail:
    # the job's UPDATE and the frames' DELETE must be undone with it.
    store._execute("INSERT INTO results (job_id, gif, png, thumbnail, parameters, width, height, seed, created_at) "
                   "VALUES (?, ?, ?, ?, '{}', 1, 1, '5', 0)", (job.id, b"THERE", b"THERE", b"T"))
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        store.complete(job.lease, result(job.id))
    after = store.get(job.id)
    assert (after.status, after.step, after.finished_at, after.worker_id) == ("running", 0, None, "w")
    assert after.lease_expires_at == pytest.approx(before.lease_expires_at)
    assert store.frames(job.id) == [(0, b"frame 0"), (1, b"frame 1")]
    assert store.result(job.id).gif == b"THERE"
    # The store is usable afterwards (no transaction left open) and the lease is still current.
    store._execute("DELETE FROM results WHERE job_id = ?", (job.id,))
    assert store.complete(job.lease, result(job.id))
    assert store.result(job.id).gif == b"GIF" and store.frames(job.id) == []
