"""JobStore contract tests (t2i/store/base.py), run against both SQLite and PostgreSQL.

Every test takes `store_url` (conftest.py), so each runs once per backend on a fresh, empty database.
Expired leases are made with a negative lease_seconds, never by sleeping.
"""

from __future__ import annotations

import threading
import time

import pytest

from t2i.errors import PresetError
from t2i.presets import get_preset
from t2i.service.queue import submit_job
from t2i.spec import SpecError, make_spec
from t2i.store import STATUSES, Beat, Lease, Result, open_store

PRESET = "tiny-vqgan-untrained"
EXPIRED = -5.0      # lease_seconds that leave a lease already expired
LONG = 300.0        # a lease that cannot expire during a test


def spec(prompt: str = "a red circle", iterations: int = 5) -> dict:
    return make_spec(prompt, PRESET, iterations=iterations).to_dict()


def submit(store, sp: dict, **kw) -> int:
    """The store keeps job data opaque: the caller says the batch key and the step count."""
    return store.submit(sp, batch_key=f"{sp['preset']}|{sp['width']}x{sp['height']}|{sp['cutn']}",
                        total=sp["iterations"], **kw)


def make_result(job_id: int, *, tag: bytes = b"", seed: int = 2**63 - 1) -> Result:
    return Result(job_id=job_id, gif=b"GIF89a" + bytes(range(256)) + tag, png=b"\x89PNG\r\n\x1a\n\x00" + tag,
                  thumbnail=b"thumb\x00\xff" + tag, parameters={"lr": 0.1, "cutn": 32, "nested": {"a": [1, 2]}},
                  width=320, height=192, seed=seed, created_at=0.0)


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def other(store_url, store):
    """A second, independent connection to the same database (another host or process)."""
    s = open_store(store_url)
    yield s
    s.close()


def claim_new(store, worker="w-a", lease=LONG, **submit_kw):
    """Submit one job and claim it (the queue must otherwise be empty of queued jobs)."""
    job_id = submit(store, spec(), **submit_kw)
    job = store.claim(worker, lease)
    assert job is not None and job.id == job_id
    return job


def tables(store) -> set[str]:
    if hasattr(store, "path"):   # SQLite
        rows = store._all("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = store._all("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows}


def schema_version(store) -> list:
    if hasattr(store, "path"):
        return [store._one("PRAGMA user_version")[0]]
    return [r[0] for r in store._all("SELECT version FROM schema_version")]


# --- submitting and reading -----------------------------------------------------------------

def test_schema_created_on_first_open(store_url):
    s = open_store(store_url)
    try:
        assert {"jobs", "frames", "results", "workers"} <= tables(s)
        assert s.counts() == {status: 0 for status in STATUSES}
        assert s.jobs() == []
        assert s.workers() == []
        assert s.get(1) is None
    finally:
        s.close()


def test_submit_get_round_trip(store):
    sp = spec("a red circle", iterations=7)
    job_id = submit(store, sp, priority=2, max_attempts=4, submitter="alice")
    job = store.get(job_id)
    assert job.id == job_id
    assert job.spec == sp
    assert job.prompt == "a red circle"
    assert job.preset == PRESET
    assert job.total == 7 == sp["iterations"]
    assert job.status == "queued"
    assert job.attempts == 0
    assert job.priority == 2 and job.max_attempts == 4 and job.submitter == "alice"
    assert job.worker_id is None and job.lease_expires_at is None and job.started_at is None
    assert job.finished_at is None and job.error is None and job.retry_of is None
    assert job.cancel_requested is False
    assert job.step == 0
    assert abs(job.created_at - time.time()) < 60


def test_submit_job_goes_through_validation(store):
    job_id = submit_job(store, "  a blue   square ", PRESET, iterations=3, submitter="bob")
    job = store.get(job_id)
    assert job.prompt == "a blue square"
    assert job.total == 3
    assert job.submitter == "bob"
    assert job.spec == make_spec("a blue square", PRESET, iterations=3,
                                 defaults=get_preset(PRESET).defaults).to_dict()


def test_open_same_url_twice(store_url):
    first = open_store(store_url)
    try:
        job_id = submit(first, spec())
        version = schema_version(first)
        second = open_store(store_url)
        try:
            assert schema_version(second) == version == schema_version(first)
            assert len(version) == 1 and version[0] >= 1
            assert second.get(job_id).spec == spec()
            assert second.counts()["queued"] == 1
            # Writes through one connection are seen by the other.
            other_id = submit(second, spec("a green cone"))
            assert first.get(other_id).prompt == "a green cone"
            assert [j.id for j in first.jobs()] == [other_id, job_id]
        finally:
            second.close()
    finally:
        first.close()


def test_concurrent_first_opens_migrate_once(store_url):
    """Several executors starting together on a fresh database: one migrates, none fails."""
    n = 6
    stores, errors = [None] * n, []
    barrier = threading.Barrier(n, timeout=60)

    def opener(k: int) -> None:
        try:
            barrier.wait()
            stores[k] = open_store(store_url)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=opener, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        versions = {tuple(schema_version(s)) for s in stores}
        assert len(versions) == 1 and len(next(iter(versions))) == 1
        job_id = submit(stores[0], spec())
        assert all(s.get(job_id) is not None for s in stores)
    finally:
        for s in stores:
            if s is not None:
                s.close()


def test_sqlite_file_created_in_missing_directory(store_url, tmp_path):
    if not store_url.startswith("sqlite"):
        # PostgreSQL has no file; the equivalent is that a fresh database gets its schema.
        s = open_store(store_url)
        try:
            assert "jobs" in tables(s)
        finally:
            s.close()
        return
    path = tmp_path / "not" / "yet" / "there" / "t2i.db"
    assert not path.parent.exists()
    s = open_store(f"sqlite:///{path}")
    try:
        job_id = submit(s, spec())
        assert s.get(job_id).status == "queued"
    finally:
        s.close()
    assert path.is_file()


# --- claim order, positions, counts ---------------------------------------------------------

def test_claim_empty_queue_returns_none(store):
    assert store.claim("w", LONG) is None
    assert store.counts() == {status: 0 for status in STATUSES}


def test_claim_order_priority_then_id(store):
    low1 = submit(store, spec("low one"))
    high1 = submit(store, spec("high one"), priority=5)
    low2 = submit(store, spec("low two"))
    high2 = submit(store, spec("high two"), priority=5)
    mid = submit(store, spec("mid"), priority=1)
    neg = submit(store, spec("negative"), priority=-1)
    order = [high1, high2, mid, low1, low2, neg]
    assert [store.queue_position(j) for j in order] == [1, 2, 3, 4, 5, 6]
    claimed = []
    while (job := store.claim("w", LONG)) is not None:
        claimed.append(job.id)
    assert claimed == order
    assert all(store.queue_position(j) is None for j in order)


def test_claim_sets_lease(store):
    job_id = submit(store, spec())
    before = time.time()
    job = store.claim("worker-1", LONG)
    assert job.id == job_id
    assert job.status == "running"
    assert job.worker_id == "worker-1"
    assert job.attempts == 1
    assert job.lease == Lease(job_id, "worker-1", 1)
    assert job.lease_expires_at > before + LONG - 60
    assert job.started_at is not None and job.heartbeat_at is not None
    stored = store.get(job_id)
    assert stored.status == "running" and stored.worker_id == "worker-1" and stored.attempts == 1
    assert stored.lease_expires_at == pytest.approx(job.lease_expires_at)
    assert store.claim("worker-2", LONG) is None


def test_queue_position_and_counts(store):
    a = submit(store, spec("a"))
    b = submit(store, spec("b"))
    c = submit(store, spec("c"))
    assert (store.queue_position(a), store.queue_position(b), store.queue_position(c)) == (1, 2, 3)
    assert store.queue_position(999_999) is None
    running = store.claim("w", LONG)
    assert running.id == a
    assert store.queue_position(a) is None
    assert (store.queue_position(b), store.queue_position(c)) == (1, 2)
    assert store.cancel(c) == "cancelled"
    assert store.queue_position(c) is None
    counts = store.counts()
    assert set(counts) == set(STATUSES)
    assert counts == {"queued": 1, "running": 1, "done": 0, "failed": 0, "cancelled": 1}
    assert store.fail(running.lease, "boom")
    assert store.counts() == {"queued": 1, "running": 0, "done": 0, "failed": 1, "cancelled": 1}


# --- exactly once under concurrency ---------------------------------------------------------

def claim_concurrently(store_url: str, n_threads: int, claim) -> list[list]:
    """Each of n_threads workers opens its own store and, from a common start, calls
    claim(store, k) until it returns nothing; returns what each worker got, in order. Fails when a
    worker raised or hung."""
    got: list[list] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads, timeout=60)

    def worker(k: int) -> None:
        try:
            s = open_store(store_url)
            try:
                barrier.wait()
                while taken := claim(s, k):
                    got[k].append(taken)
            finally:
                s.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    assert errors == []
    return got


def test_concurrent_claims_exactly_once(store_url, store):
    n_jobs, n_threads = 60, 8
    submitted = {submit(store, spec(f"job {i}")) for i in range(n_jobs)}
    assert len(submitted) == n_jobs

    def claim(s, k):
        job = s.claim(f"worker-{k}", LONG)
        assert job is None or (job.worker_id == f"worker-{k}" and job.attempts == 1)
        return job.id if job else None

    claimed = claim_concurrently(store_url, n_threads, claim)
    ids = [i for part in claimed for i in part]
    assert len(ids) == n_jobs
    assert len(set(ids)) == n_jobs, "a job was claimed twice"
    assert set(ids) == submitted
    assert store.counts()["running"] == n_jobs and store.counts()["queued"] == 0
    for k, part in enumerate(claimed):
        for job_id in part:
            job = store.get(job_id)
            assert job.worker_id == f"worker-{k}" and job.attempts == 1


# --- heartbeat ------------------------------------------------------------------------------

def test_heartbeat_extends_lease(store):
    job = claim_new(store, lease=10)
    old = store.get(job.id).lease_expires_at
    beat = store.heartbeat(job.lease, 1000)
    assert beat == Beat(alive=True, cancel_requested=False)
    new = store.get(job.id).lease_expires_at
    assert new > old + 900
    assert new > time.time() + 900


def test_heartbeat_reports_cancel(store):
    job = claim_new(store)
    assert store.cancel(job.id) == "cancel_requested"
    assert store.get(job.id).status == "running"
    assert store.get(job.id).cancel_requested is True
    assert store.heartbeat(job.lease, LONG) == Beat(alive=True, cancel_requested=True)
    assert store.progress(job.lease, 2, 0.5) == Beat(alive=True, cancel_requested=True)


def test_heartbeat_stale_lease(store):
    job = claim_new(store, worker="w-a")
    old_expiry = store.get(job.id).lease_expires_at
    assert store.heartbeat(Lease(job.id, "w-a", 2), 1000).alive is False
    assert store.heartbeat(Lease(job.id, "w-b", 1), 1000).alive is False
    assert store.heartbeat(Lease(999_999, "w-a", 1), 1000).alive is False
    assert store.get(job.id).lease_expires_at == pytest.approx(old_expiry)
    # A finished job's lease is dead too.
    assert store.complete(job.lease, make_result(job.id))
    assert store.heartbeat(job.lease, LONG) == Beat(alive=False, cancel_requested=False)


# --- fencing --------------------------------------------------------------------------------

def test_fencing_after_expiry_and_reclaim(store):
    job_id = submit(store, spec())
    a = store.claim("w-a", EXPIRED)
    assert a.id == job_id
    assert store.add_frame(a.lease, 1, b"frame-a-1")
    assert store.sweep() == (1, 0)
    swept = store.get(job_id)
    assert swept.status == "queued" and swept.worker_id is None
    assert store.frames(job_id) == []

    b = store.claim("w-b", LONG)
    assert b.id == job_id and b.attempts == 2 and b.worker_id == "w-b"
    assert store.progress(b.lease, 3, 1.5) == Beat(alive=True, cancel_requested=False)
    assert store.add_frame(b.lease, 3, b"frame-b-3")
    before = store.get(job_id)
    frames_before = store.frames(job_id)

    old = a.lease
    assert store.heartbeat(old, LONG).alive is False
    assert store.progress(old, 4, 0.1).alive is False
    assert store.add_frame(old, 3, b"frame-a-3") is False
    assert store.add_frame(old, 4, b"frame-a-4") is False
    assert store.complete(old, make_result(job_id, tag=b"A")) is False
    assert store.fail(old, "A failed") is False
    assert store.release(old) is False
    assert store.finish_cancelled(old) is False

    assert store.get(job_id) == before
    assert store.frames(job_id) == frames_before == [(3, b"frame-b-3")]
    assert store.result(job_id) is None

    # The current holder is unaffected.
    assert store.progress(b.lease, 5, 0.2) == Beat(alive=True, cancel_requested=False)
    assert store.add_frame(b.lease, 5, b"frame-b-5")
    assert store.complete(b.lease, make_result(job_id, tag=b"B"))
    done = store.get(job_id)
    assert done.status == "done" and done.step == done.total
    assert store.result(job_id).gif.endswith(b"B")


# --- sweep ----------------------------------------------------------------------------------

def test_sweep(store):
    requeue = claim_new(store, worker="w-1", lease=EXPIRED)
    assert store.add_frame(requeue.lease, 1, b"lost frame")
    give_up = claim_new(store, worker="w-2", lease=EXPIRED, max_attempts=1)
    cancelled = claim_new(store, worker="w-3", lease=EXPIRED)
    assert store.cancel(cancelled.id) == "cancel_requested"
    alive = claim_new(store, worker="w-4", lease=LONG)
    assert store.add_frame(alive.lease, 1, b"kept frame")
    queued = submit(store, spec("waiting"))
    alive_before = store.get(alive.id)
    queued_before = store.get(queued)

    assert store.sweep() == (1, 2)

    j = store.get(requeue.id)
    assert j.status == "queued" and j.worker_id is None and j.lease_expires_at is None
    assert j.attempts == 1 and j.error is None
    assert store.frames(requeue.id) == []

    j = store.get(give_up.id)
    assert j.status == "failed"
    assert j.error == "the executor died while running this job alone (1 time): probably out of memory"
    assert j.finished_at is not None

    j = store.get(cancelled.id)
    assert j.status == "cancelled" and j.finished_at is not None

    assert store.get(alive.id) == alive_before
    assert store.frames(alive.id) == [(1, b"kept frame")]
    assert store.get(queued) == queued_before

    assert store.sweep() == (0, 0)


def test_sweep_fails_after_max_attempts(store):
    job_id = submit(store, spec(), max_attempts=2)
    for attempt in (1, 2):
        job = store.claim(f"w-{attempt}", EXPIRED)
        assert job.id == job_id and job.attempts == attempt
        expected = (1, 0) if attempt == 1 else (0, 1)
        assert store.sweep() == expected
    job = store.get(job_id)
    assert job.status == "failed"
    assert job.error == "the executor died while running this job alone (2 times): probably out of memory"
    assert store.claim("w-3", LONG) is None


def test_a_death_in_a_batch_is_not_charged_and_the_job_runs_alone_next(store):
    """Four jobs of one worker expire together: none is charged, each is marked alone (with the
    batch's size); an alone job is claimed only by an idle worker and nothing joins it. Its deaths
    alone are charged, and after max_attempts it fails with its load named by the caller."""
    ids = [submit(store, spec(f"job {i}"), max_attempts=2) for i in range(4)]
    key = store.get(ids[0]).batch_key
    first = store.claim("w-dead", EXPIRED)
    batch = [first] + [store.claim("w-dead", LONG, batch_key=key) for _ in range(3)]
    assert [j.id for j in batch] == ids and not any(j.alone for j in batch)
    assert store.add_frame(batch[1].lease, 1, b"lost frame")
    # One lease expired: the worker is gone for all four, the ones still leased included.
    assert store.sweep(describe=lambda sp: f"64x64 ({sp['prompt']})") == (4, 0)
    for job_id in ids:
        j = store.get(job_id)
        assert (j.status, j.attempts, j.worker_id, j.alone) == ("queued", 0, None, True)
        assert j.batch_key == f"alone after a batch of 4: {key}"
    assert store.frames(ids[1]) == []

    # Claimed only into an empty batch; nothing joins it (whatever key is asked for).
    busy = submit(store, spec("busy"))
    held = store.claim("w-busy", LONG, batch_key=key)
    assert held.id == busy and not held.alone
    assert store.claim("w-busy", LONG) is None                  # w-busy runs a job: no alone job for it
    a = store.claim("w-a", EXPIRED)
    assert a.id == ids[0] and a.alone and a.attempts == 1
    assert store.claim("w-a", LONG, batch_key=key) is None      # nothing joins an alone job...
    assert store.claim("w-a", LONG, batch_key=a.batch_key) is None
    assert store.claim("w-a", LONG) is None                     # ...nor is a second one taken beside it

    # Died alone: charged; after max_attempts (2) it fails with one line naming its load.
    assert store.sweep(describe=lambda sp: f"64x64 ({sp['prompt']})") == (1, 0)
    assert store.get(ids[0]).attempts == 1 and store.get(ids[0]).status == "queued"
    again = store.claim("w-b", EXPIRED)
    assert again.id == ids[0] and again.attempts == 2
    assert store.sweep(describe=lambda sp: f"64x64 ({sp['prompt']})") == (0, 1)
    failed = store.get(ids[0])
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error == ("the executor died while running this job alone at 64x64 (job 0) (2 times): "
                            "probably out of memory")
    # A retry keeps running alone; the others, alone too, finish one at a time.
    assert store.get(store.retry(ids[0])).alone
    assert store.complete(held.lease, make_result(busy))
    for job_id in ids[1:]:
        j = store.claim("w-c", LONG)
        assert j.id == job_id and j.alone and j.attempts == 1
        assert store.claim("w-c", LONG, batch_key=key) is None
        assert store.complete(j.lease, make_result(job_id))


def test_an_alone_job_killed_in_a_batch_anyway_is_charged(store):
    """The loop guard: a job is uncharged at most once. Should an alone job still die in a batch (an
    executor from before alone jobs took it with others), that death counts."""
    ids = [submit(store, spec(f"job {i}"), max_attempts=1) for i in range(2)]
    key = store.get(ids[0]).batch_key
    store.claim("w-1", EXPIRED), store.claim("w-1", EXPIRED, batch_key=key)
    assert store.sweep() == (2, 0)
    with store.transaction():  # as an old executor would: both alone jobs in one batch
        store._execute("UPDATE jobs SET status = 'running', worker_id = 'w-old', attempts = 1, "
                       "lease_expires_at = 0 WHERE id IN (?, ?)", tuple(ids))
    assert store.sweep(describe=lambda sp: 1 / 0) == (0, 2)  # a describe that fails still fails the job
    assert [store.get(i).error for i in ids] == \
        ["the executor died while running this job alone (1 time): probably out of memory"] * 2


# --- complete -------------------------------------------------------------------------------

def test_complete_stores_result(store):
    job = claim_new(store)
    assert store.add_frame(job.lease, 1, b"f1")
    assert store.progress(job.lease, 2, 0.25).alive
    assert store.complete(job.lease, make_result(job.id))
    done = store.get(job.id)
    assert done.status == "done"
    assert done.step == done.total == 5
    assert done.finished_at is not None
    r = store.result(job.id)
    expected = make_result(job.id)
    assert r.job_id == job.id
    assert r.gif == expected.gif and r.png == expected.png and r.thumbnail == expected.thumbnail
    assert isinstance(r.gif, bytes)
    assert r.parameters == expected.parameters
    assert (r.width, r.height) == (320, 192)
    assert r.seed == 2**63 - 1 and isinstance(r.seed, int)
    assert r.created_at > 0
    assert store.frames(job.id) == []           # dropped by default
    assert store.counts()["done"] == 1


def test_complete_keep_frames(store):
    job = claim_new(store)
    assert store.add_frame(job.lease, 1, b"f1")
    assert store.add_frame(job.lease, 2, b"f2")
    assert store.complete(job.lease, make_result(job.id, seed=0), keep_frames=True)
    assert store.frames(job.id) == [(1, b"f1"), (2, b"f2")]
    assert store.result(job.id).seed == 0


def test_complete_twice_is_rejected(store):
    job = claim_new(store)
    assert store.complete(job.lease, make_result(job.id, tag=b"first"))
    finished = store.get(job.id)
    assert store.complete(job.lease, make_result(job.id, tag=b"second", seed=7)) is False
    r = store.result(job.id)
    assert r.gif.endswith(b"first") and r.seed == 2**63 - 1
    assert store.get(job.id) == finished
    assert store.counts()["done"] == 1
    # The finished job's lease takes no more writes of any kind.
    assert store.add_frame(job.lease, 1, b"late") is False
    assert store.progress(job.lease, 1, 0.0).alive is False
    assert store.fail(job.lease, "late") is False
    assert store.release(job.lease) is False
    assert store.finish_cancelled(job.lease) is False
    assert store.get(job.id) == finished
    assert store.frames(job.id) == []


def test_result_light(store):
    job = claim_new(store)
    assert store.complete(job.lease, make_result(job.id))
    light = store.result(job.id, heavy=False)
    assert light.gif is None and light.png is None
    assert light.thumbnail == make_result(job.id).thumbnail and isinstance(light.thumbnail, bytes)
    assert light.parameters == make_result(job.id).parameters and light.seed == 2**63 - 1
    assert store.result(999_999) is None


# --- frames ---------------------------------------------------------------------------------

def test_add_frame_order_and_replace(store):
    job = claim_new(store)
    for step in (10, 2, 7):
        assert store.add_frame(job.lease, step, f"step {step}".encode())
    assert store.add_frame(job.lease, 7, b"\x00replaced\xff")
    assert store.frames(job.id) == [(2, b"step 2"), (7, b"\x00replaced\xff"), (10, b"step 10")]
    assert store.frames(999_999) == []


# --- fail -----------------------------------------------------------------------------------

def test_fail_one_line(store):
    job = claim_new(store)
    assert store.fail(job.lease, "CUDA error:\n  out of memory\r\n\tat step 3  ")
    j = store.get(job.id)
    assert j.status == "failed"
    assert j.error == "CUDA error: out of memory at step 3"
    assert j.finished_at is not None
    assert store.fail(job.lease, "again") is False
    assert store.get(job.id).error == "CUDA error: out of memory at step 3"


def test_fail_truncates(store):
    job = claim_new(store)
    assert store.fail(job.lease, "x" * 3000 + "\n" + "y" * 100)
    error = store.get(job.id).error
    assert 0 < len(error) <= 500
    assert "\n" not in error and error.startswith("xxx")


# --- release --------------------------------------------------------------------------------

def test_release(store):
    job = claim_new(store, worker="w-a")
    assert store.progress(job.lease, 3, 0.5).alive
    assert store.add_frame(job.lease, 3, b"partial")
    assert store.release(job.lease)
    j = store.get(job.id)
    assert j.status == "queued"
    assert j.attempts == 0
    assert j.worker_id is None and j.lease_expires_at is None
    assert j.step == 0
    assert store.frames(job.id) == []
    assert store.queue_position(job.id) == 1
    assert store.release(job.lease) is False
    again = store.claim("w-b", LONG)
    assert again.id == job.id and again.attempts == 1


def test_release_does_not_use_up_attempts(store):
    job_id = submit(store, spec(), max_attempts=1)
    for _ in range(3):
        job = store.claim("w", LONG)
        assert job.id == job_id and job.attempts == 1
        assert store.release(job.lease)
    job = store.claim("w", EXPIRED)
    assert job.attempts == 1
    assert store.sweep() == (0, 1)          # its one real attempt is the one that expired
    assert store.get(job_id).status == "failed"


def test_release_of_a_cancel_requested_job_ends_it_cancelled(store):
    job = claim_new(store, worker="w-a")
    assert store.cancel(job.id) == "cancel_requested"
    assert store.release(job.lease)
    j = store.get(job.id)
    assert j.status == "cancelled" and j.finished_at is not None and j.worker_id is None
    assert store.claim("w-b", LONG) is None


# --- cancel ---------------------------------------------------------------------------------

def test_cancel_queued(store):
    job_id = submit(store, spec())
    assert store.cancel(job_id) == "cancelled"
    j = store.get(job_id)
    assert j.status == "cancelled" and j.finished_at is not None
    assert store.claim("w", LONG) is None
    assert store.cancel(job_id) == "cancelled"


def test_cancel_running_then_finish_cancelled(store):
    job = claim_new(store)
    assert store.cancel(job.id) == "cancel_requested"
    j = store.get(job.id)
    assert j.status == "running" and j.cancel_requested is True
    assert store.heartbeat(job.lease, LONG).cancel_requested is True
    assert store.finish_cancelled(job.lease)
    j = store.get(job.id)
    assert j.status == "cancelled" and j.finished_at is not None
    assert store.finish_cancelled(job.lease) is False
    assert store.cancel(job.id) == "cancelled"


def test_cancel_finished_and_unknown(store):
    done = claim_new(store, worker="w-1")
    assert store.complete(done.lease, make_result(done.id))
    failed = claim_new(store, worker="w-2")
    assert store.fail(failed.lease, "boom")
    assert store.cancel(done.id) == "done"
    assert store.cancel(failed.id) == "failed"
    assert store.get(done.id).status == "done" and store.get(failed.id).status == "failed"
    assert store.get(done.id).cancel_requested is False
    assert store.cancel(999_999) is None


# --- retry ----------------------------------------------------------------------------------

def test_retry(store):
    sp = spec("retry me", iterations=9)
    job_id = submit(store, sp, priority=3, submitter="carol")
    job = store.claim("w", LONG)
    assert store.fail(job.lease, "boom")
    new_id = store.retry(job_id)
    assert new_id != job_id
    new = store.get(new_id)
    assert new.status == "queued" and new.attempts == 0
    assert new.spec == sp and new.total == 9
    assert new.retry_of == job_id
    assert new.priority == 3 and new.submitter == "carol"
    assert new.error is None
    assert store.get(job_id).status == "failed"       # the original is left alone

    cancelled_id = submit(store, sp)
    assert store.cancel(cancelled_id) == "cancelled"
    again = store.retry(cancelled_id)
    assert store.get(again).retry_of == cancelled_id and store.get(again).status == "queued"


def test_retry_only_failed_or_cancelled(store):
    queued = submit(store, spec())
    with pytest.raises(ValueError):
        store.retry(queued)
    running = store.claim("w", LONG)
    with pytest.raises(ValueError):
        store.retry(running.id)
    assert store.complete(running.lease, make_result(running.id))
    with pytest.raises(ValueError):
        store.retry(running.id)
    with pytest.raises(ValueError):
        store.retry(999_999)
    assert sum(store.counts().values()) == 1


# --- jobs() ---------------------------------------------------------------------------------

def test_jobs_listing(store):
    a = submit(store, spec("a"), submitter="alice")
    b = submit(store, spec("b"), submitter="bob")
    c = submit(store, spec("c"), submitter="alice")
    d = submit(store, spec("d"))
    assert [j.id for j in store.jobs()] == [d, c, b, a]
    assert [j.id for j in store.jobs(limit=2)] == [d, c]
    assert [j.id for j in store.jobs(submitter="alice")] == [c, a]
    assert [j.id for j in store.jobs(submitter="nobody")] == []
    running = store.claim("w", LONG)
    assert running.id == a
    assert [j.id for j in store.jobs(status="running")] == [a]
    assert [j.id for j in store.jobs(status="queued")] == [d, c, b]
    assert [j.id for j in store.jobs(status="queued", submitter="alice")] == [c]
    assert [j.id for j in store.jobs(status="queued", limit=1)] == [d]
    assert store.jobs(status="done") == []
    assert store.jobs()[0].spec == spec("d")


# --- executors ------------------------------------------------------------------------------

def test_workers(store):
    job_id = submit(store, spec())
    store.worker_seen("w-1", host="host-a", device="cpu", job_id=None)
    store.worker_seen("w-2", host="host-b", device="cuda:0", job_id=None)
    store.worker_seen("w-1", host="host-a", device="cpu", job_id=job_id)
    seen = store.workers(seen_within=60)
    assert [w["id"] for w in seen] == ["w-1", "w-2"]
    w1, w2 = seen
    assert w1["host"] == "host-a" and w1["device"] == "cpu" and w1["job_id"] == job_id
    assert w2["host"] == "host-b" and w2["device"] == "cuda:0" and w2["job_id"] is None
    assert w1["seen_at"] >= w1["started_at"]
    assert abs(w1["seen_at"] - time.time()) < 60
    store.worker_seen("w-1", host="host-a", device="cpu", job_id=None)
    assert store.workers()[0]["job_id"] is None
    assert store.workers(seen_within=-10) == []     # "seen within" the future: nobody


# --- validation before insert ---------------------------------------------------------------

@pytest.mark.parametrize("prompt, preset, fields, error", [
    ("a red circle", PRESET, {"iterations": 0}, SpecError),
    ("", PRESET, {"iterations": 5}, SpecError),
    ("a red circle", "nope", {"iterations": 5}, PresetError),
])
def test_submit_job_rejects_bad_input(store, prompt, preset, fields, error):
    with pytest.raises(error):
        submit_job(store, prompt, preset, **fields)
    assert store.counts() == {status: 0 for status in STATUSES}
    assert store.jobs() == []


# --- waiting for work -----------------------------------------------------------------------

def test_wait_for_work_times_out(store):
    start = time.monotonic()
    assert store.wait_for_work(0.3) is None
    assert time.monotonic() - start < 0.3 + 5


def test_wait_for_work_woken_by_submit(store_url, store, other):
    # PostgreSQL wakes waiters with a NOTIFY; SQLite has no such signal and waits out its timeout,
    # so it gets a short one (the waiter must still return, and the job be there to claim).
    timeout = 30 if store_url.startswith("postgres") else 0.5
    # The first call starts listening; a short one here makes sure the waiter is listening
    # before the submit below, without sleeping.
    store.wait_for_work(0.01)
    woke = threading.Event()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            store.wait_for_work(timeout)
            woke.set()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=waiter, daemon=True)
    start = time.monotonic()
    t.start()
    submit(other, spec("wake up"))
    t.join(timeout=15)
    assert errors == []
    assert woke.is_set(), "a submit on another connection did not wake the waiter"
    assert time.monotonic() - start < 15
    assert store.claim("w", LONG) is not None


# --- job data is opaque to the store ---------------------------------------------------------

def test_the_caller_gives_batch_key_and_total_and_the_spec_is_stored_as_given(store):
    """The store reads no engine field out of the job data: a spec of any family (or none) works."""
    data = {"prompt": "a six", "preset": "digits", "family": "diffusion", "steps": 7, "whatever": [1, {"x": 2}]}
    a = store.submit(data, batch_key="digits|32x32", total=7)
    b = store.submit({**data, "prompt": "a two"}, batch_key="digits|64x64", total=3)
    assert store.claim("w", LONG, batch_key="digits|16x16") is None
    job = store.claim("w", LONG, batch_key="digits|64x64")
    assert job.id == b and job.total == 3 and job.spec == {**data, "prompt": "a two"}
    job = store.claim("w", LONG)
    assert job.id == a and job.total == 7 and (job.prompt, job.preset) == ("a six", "digits")
    assert store.progress(job.lease, 7, None).alive and store.get(a).step == 7
    assert store.fail(job.lease, "no") and store.get(store.retry(a)).total == 7
    again = store.claim("w", LONG, batch_key="digits|32x32")
    assert again is not None and again.spec == data


def test_a_version_2_database_migrates_and_its_queued_guided_jobs_still_run(tmp_path):
    """A database from before batching and families: version 2's schema, a queued job whose spec has
    no family. Opening migrates it; the job is claimed, read as guided, and keyed like new ones."""
    import json
    import sqlite3

    from t2i.spec import JobSpec
    from t2i.store.schema import SQLITE

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in SQLITE[:2]:
        conn.executescript(script)
    old_spec = {"prompt": "a red circle", "preset": PRESET, "width": 64, "height": 64, "iterations": 4, "cutn": 8,
                "lr": 0.1, "save_every": 2, "seed": 5, "init_image": None, "image_prompts": []}
    conn.execute("INSERT INTO jobs (spec, prompt, preset, status, total, created_at) VALUES (?, ?, ?, 'queued', 4, 0)",
                 (json.dumps(old_spec), old_spec["prompt"], PRESET))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()

    s = open_store(f"sqlite:///{path}")
    try:
        assert schema_version(s) == [len(SQLITE)]
        job = s.claim("w", LONG)
        spec = JobSpec.from_dict(job.spec)
        assert (job.total, spec.family, spec.options.iterations, spec.options.cutn) == (4, "guided", 4, 8)
        assert spec.batch_key == make_spec("x", PRESET, width=64, height=64, cutn=8).batch_key
    finally:
        s.close()


# --- SQLite: readers never queue behind a writer; what is not a job database is refused -----

def _returns_promptly(fn, bound: float = 5.0):
    """fn() in a thread, joined with a generous bound (a blocked reader waits busy_timeout, 10 s,
    and then retries for minutes); returns fn's value."""
    out, errors = [], []

    def run():
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), "the read waited for the writer"
    assert errors == []
    return out[0]


def test_sqlite_readers_and_opening_do_not_wait_for_another_connections_write_lock(tmp_path):
    import sqlite3

    path = tmp_path / "t2i.db"
    first = open_store(f"sqlite:///{path}")
    job_id = submit(first, spec())
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    writer.execute("UPDATE jobs SET priority = 5")
    try:
        def read_through_a_new_store():  # a web app starting while an executor writes
            s = open_store(f"sqlite:///{path}")
            try:
                return s.get(job_id).priority, s.counts()["queued"], len(s.gallery(status=None)[0])
            finally:
                s.close()

        assert _returns_promptly(read_through_a_new_store) == (0, 1, 1)  # the last committed state
        assert _returns_promptly(lambda: first.get(job_id).priority) == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        first.close()


def test_sqlite_a_transaction_in_one_thread_does_not_hold_up_reads_in_another(tmp_path):
    """The web app's sessions share one store: one session's write must not freeze the others' pages."""
    s = open_store(f"sqlite:///{tmp_path / 't2i.db'}")
    job_id = submit(s, spec())
    inside, release = threading.Event(), threading.Event()

    def long_write():
        with s.transaction():
            s._execute("UPDATE jobs SET priority = 7 WHERE id = ?", (job_id,))
            inside.set()
            release.wait(60)

    writer = threading.Thread(target=long_write, daemon=True)
    writer.start()
    try:
        assert inside.wait(30)
        assert _returns_promptly(lambda: (s.get(job_id).priority, s.counts()["queued"])) == (0, 1)
    finally:
        release.set()
        writer.join(30)
    assert s.get(job_id).priority == 7
    s.close()


@pytest.mark.parametrize("kind", ["text", "other-application", "directory", "dev-null", "newer-schema"])
def test_sqlite_what_is_not_a_job_database_is_refused_untouched(tmp_path, kind):
    import hashlib
    import sqlite3

    from t2i.store import StoreError

    path = tmp_path / "db"
    if kind == "text":
        path.write_text("my notes\n" * 100)
    elif kind in ("other-application", "newer-schema"):
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)" if kind == "other-application" else "CREATE TABLE jobs (id)")
        conn.execute(f"PRAGMA user_version = {0 if kind == 'other-application' else 99}")
        conn.commit()
        conn.close()
    elif kind == "directory":
        path.mkdir()
    else:
        path = "/dev/null"
    digest = (lambda: hashlib.sha256(open(path, "rb").read()).hexdigest()) if kind != "directory" else (lambda: "")
    before = digest()
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert digest() == before  # not initialised, not switched to WAL
    if kind == "other-application":
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert not (tmp_path / "db-wal").exists()


def test_sqlite_a_missing_file_is_created_only_when_asked(tmp_path):
    from t2i.store import StoreMissing

    path = tmp_path / "not" / "there" / "t2i.db"
    with pytest.raises(StoreMissing):
        open_store(f"sqlite:///{path}", create=False)
    assert not path.parent.exists()  # no folders made either
    open_store(f"sqlite:///{path}", create=True).close()
    s = open_store(f"sqlite:///{path}", create=False)
    s.close()


def test_priorities_beyond_the_column_are_refused_with_one_line(store):
    with pytest.raises(SpecError, match=r"^priority: must be between -2147483648 and 2147483647, got 2147483648$"):
        submit(store, spec(), priority=2**31)
    with pytest.raises(SpecError):
        submit(store, spec(), priority=-(2**64))
    assert sum(store.counts().values()) == 0


# --- upgrading a database with a damaged row --------------------------------------------------------

def _old_database(store_url: str, version: int, rows: list[tuple[str, str, str]]) -> list[int]:
    """A database as t2i made it at `version`, holding jobs (spec text as stored, prompt, status);
    the spec text is written as given, damaged or not. Returns the jobs' ids."""
    from t2i.store.schema import POSTGRES, SQLITE

    insert = ("INSERT INTO jobs (spec, prompt, preset, status, total, submitter, created_at) "
              "VALUES ({p}, {p}, {p}, {p}, 1, 'alice', 0) RETURNING id")
    if store_url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(store_url[len("sqlite:///"):])
        for script in SQLITE[:version]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        ids = [conn.execute(insert.format(p="?"), (text, prompt, PRESET, status)).fetchone()[0]
               for text, prompt, status in rows]
        conn.commit()
        conn.close()
        return ids
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        for script in POSTGRES[:version]:
            conn.execute(script)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        return [conn.execute(insert.format(p="%s"), (text, prompt, PRESET, status)).fetchone()[0]
                for text, prompt, status in rows]


def test_an_upgrade_marks_a_damaged_row_names_it_once_and_the_service_starts(store_url, caplog):
    """Version 5 moves inline images out of the specs: a spec it cannot read (cut short, not JSON, not
    an object, an image that is not base64) is left as it was and marked; the other rows upgrade."""
    import base64
    import json
    import logging

    from t2i.store.schema import SQLITE

    image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(200))).decode()
    good = {**spec("good"), "init_image": image, "image_prompts": []}
    plain = spec("plain")
    whole = json.dumps({**spec("cut short"), "init_image": image})
    cut = whole[:whole.index(image) + 20]                                        # a write cut off mid-image
    twice = json.dumps([{**spec("in a list"), "init_image": image}])              # JSON, but not an object
    padding = json.dumps({**spec("bad padding"), "image_prompts": ["QUJDQ"]})  # not base64
    done = json.dumps({**spec("finished"), "init_image": "@@"})[:-1]
    ids = _old_database(store_url, 4, [(json.dumps(good), "good", "queued"), (cut, "cut short", "queued"),
                                       (twice, "in a list", "running"), (json.dumps(plain), "plain", "queued"),
                                       (padding, "bad padding", "queued"), (done, "finished", "done")])
    with caplog.at_level(logging.WARNING, logger="t2i.store"):
        s = open_store(store_url)
    try:
        assert schema_version(s) == [len(SQLITE)]
        lines = [r.getMessage() for r in caplog.records if r.name == "t2i.store"]
        damaged = ids[1], ids[2], ids[4], ids[5]
        assert len(lines) == 4 and all(f"job {i} " in line for i, line in zip(damaged, lines))
        assert "not valid JSON" in lines[0] and "not an object" in lines[1] and "base64" in lines[2]
        jobs = {j.id: j for j in s.jobs()}   # the pages' listing reads every row, damaged or not
        assert len(jobs) == 6
        assert jobs[ids[0]].spec["init_image"]["upload"] and jobs[ids[3]].spec == plain
        assert s._one("SELECT COUNT(*) FROM job_uploads")[0] == 1
        for job_id in damaged:
            job = jobs[job_id]
            assert job.status == ("done" if job_id == ids[5] else "failed")
            assert "schema version 5 could not read this job's spec" in job.error and "\n" not in job.error
        original = {ids[1]: cut, ids[2]: twice, ids[4]: padding, ids[5]: done}
        for job_id, text in original.items():   # left exactly as it was
            assert s._one("SELECT spec FROM jobs WHERE id = ?", (job_id,))[0] == text
        with pytest.raises(ValueError, match=f"^job {ids[1]}'s spec cannot be read"):
            s.retry(ids[1])
        claimed = {s.claim("w", LONG).id, s.claim("w", LONG).id}
        assert claimed == {ids[0], ids[3]} and s.claim("w", LONG) is None
        assert s.gallery(status=None)[1] == 6
    finally:
        s.close()
    caplog.clear()
    open_store(store_url).close()   # opened again: nothing more to upgrade or report
    assert not [r for r in caplog.records if r.name == "t2i.store"]


@pytest.mark.slow
def test_the_web_app_starts_on_an_upgraded_database_and_lists_the_damaged_row(tmp_path, monkeypatch):
    """The service starts: the Queue page opens the store (which upgrades it) and lists every job."""
    import json

    from streamlit.testing.v1 import AppTest

    from t2i.paths import ROOT
    from t2i.web.visitor import COOKIE

    class Client:   # the browser handshake AppTest lacks (as tests/test_pages.py's)
        cookies, headers, remote_ip = {COOKIE: "7" * 43}, [], None

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cut = json.dumps({**spec("cut short"), "init_image": "QUJD" * 50})[:-60]
    good, bad = _old_database(url, 4, [(json.dumps(spec("fine")), "fine", "queued"), (cut, "cut short", "queued")])
    monkeypatch.setenv("T2I_DB", url)
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: Client())
    at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
    at.run()
    at.switch_page("t2i/web/queue_page.py").run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    (table,) = [d.value for d in at.dataframe if "status" in d.value.columns]
    rows = {r["id"]: r for r in table.to_dict("records")}
    assert rows[good]["status"] == "queued" and rows[bad]["status"] == "failed"
    assert "could not read this job's spec" in rows[bad]["error"]
