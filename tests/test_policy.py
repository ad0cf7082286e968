"""Public-page limits: per client address (active jobs, submissions a minute, votes per pair and per
minute), the global queue bound, and that each is checked atomically with its insert (both backends)."""

import threading
import uuid

import pytest

from t2i.service.queue import QueueLimit, SubmitPolicy, submit_group, submit_job
from t2i.service.ranking import VoteLimit, VotePolicy, cast_vote
from t2i.spec import Limits, SpecError
from t2i.store import Result, open_store

PRESET = "tiny-vqgan-untrained"
THREADS = 12


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def fresh() -> str:
    """A new visitor id, as a visitor who drops their cookie gets one: free, so no limit may rest on it."""
    return uuid.uuid4().hex


def submit(store, address, policy, who=None, **kw):
    return submit_job(store, "a cat", PRESET, submitter=who or fresh(), address=address, policy=policy,
                      iterations=1, **kw)


def address_of(store, job_id):
    return store._one("SELECT address FROM jobs WHERE id = ?", (job_id,))[0]


def test_active_jobs_per_address_whatever_the_visitor_id(store):
    policy = SubmitPolicy(max_active_per_address=2, max_per_minute=100, max_queued=100)
    first = submit(store, "203.0.113.5", policy)
    submit(store, "203.0.113.5", policy)
    with pytest.raises(QueueLimit, match="your address already has 2 jobs queued or running"):
        submit(store, "203.0.113.5", policy)  # a third visitor id from the same address
    submit(store, "203.0.113.6", policy)      # other addresses are not affected
    store.cancel(first)                        # a finished job frees a place
    again = submit(store, "203.0.113.5", policy)
    assert store.counts()["queued"] == 3 and address_of(store, again) == "203.0.113.5"


def test_submissions_per_minute_per_address(store):
    policy = SubmitPolicy(max_active_per_address=100, max_per_minute=3, max_queued=100)
    for _ in range(3):
        store.cancel(submit(store, "203.0.113.5", policy))
    with pytest.raises(QueueLimit, match="at most 3 submissions a minute"):
        submit(store, "203.0.113.5", policy)
    assert sum(store.counts().values()) == 3


def test_global_queue_bound(store):
    policy = SubmitPolicy(max_active_per_address=100, max_per_minute=100, max_queued=2)
    submit(store, "203.0.113.5", policy)
    submit(store, "203.0.113.6", policy)
    with pytest.raises(QueueLimit, match="the queue is full"):
        submit(store, "203.0.113.7", policy)
    assert store.counts()["queued"] == 2


def test_the_shell_has_no_limits_and_no_address(store):
    ids = [submit_job(store, "a cat", PRESET, iterations=1) for _ in range(4)]
    assert store.counts()["queued"] == 4 and address_of(store, ids[0]) is None


# --- the budget of work per address: steps times the family's cost per step --------------------

WORK = SubmitPolicy(max_active_per_address=10, max_per_minute=100, max_queued=100, max_work_per_address=50)


def work_job(store, address, preset=PRESET, **fields):
    return submit_job(store, "a cat", preset, submitter=fresh(), address=address, policy=WORK, **fields)


def test_an_address_may_hold_its_budget_of_work_and_the_refusal_says_what_it_holds(store):
    a = "198.51.100.7"
    first = work_job(store, a, iterations=20)       # a guided step is a unit: 20
    work_job(store, a, iterations=20)               # 40
    with pytest.raises(QueueLimit) as refused:
        work_job(store, a, iterations=11)           # 51 > 50
    assert str(refused.value) == ("your queued and running jobs already hold 40 of your address's 50 units of "
                                  "work (a unit: one guided step) and this job needs 11; wait for one to "
                                  "finish, cancel one, or ask for fewer steps")
    assert store.counts()["queued"] == 2
    work_job(store, "203.0.113.9", iterations=50)   # another address has its own budget
    # A diffusion step costs its family's 0.4: 25 steps are 10 units, and fit where 11 guided steps did not.
    work_job(store, a, "tiny-diffusion-untrained", steps=25)
    job = store.claim("w", 60)                      # a running job counts the steps it has still to run
    assert job.id == first
    assert store.progress(job.lease, 15, None).alive
    work_job(store, a, iterations=15)               # 5 + 20 + 10 + 15 = 50
    with pytest.raises(QueueLimit, match=r"alone needs 60 units, over your address's 50 units of work"):
        work_job(store, "192.0.2.1", iterations=60)
    assert store.counts()["queued"] + store.counts()["running"] == 5


def test_a_compare_group_counts_the_work_of_every_job(store):
    a = "198.51.100.7"
    work_job(store, a, iterations=20)
    with pytest.raises(QueueLimit, match=r"already hold 20 of your address's 50 units .* this group needs 40;"):
        submit_group(store, "a cat", [PRESET, "tiny-gumbel-untrained"], address=a, policy=WORK, iterations=20)
    assert store.counts()["queued"] == 1
    assert len(submit_group(store, "a cat", [PRESET, "tiny-gumbel-untrained"], address=a, policy=WORK,
                            iterations=15)) == 2


def test_the_budget_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("T2I_MAX_WORK_PER_ADDRESS", "1234.5")
    assert SubmitPolicy.from_env().quota.max_work == 1234.5


def race(n: int, attempt) -> tuple[list, list]:
    """Run attempt(i) in n threads released together; returns (results, refusals)."""
    start = threading.Barrier(n)
    results, refusals, lock = [], [], threading.Lock()

    def run(i):
        start.wait()
        try:
            value = attempt(i)
        except (QueueLimit, VoteLimit) as e:
            with lock:
                refusals.append(str(e))
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, refusals


def test_concurrent_submits_from_one_address_accept_exactly_the_limit(store):
    """Check-then-insert let 7 to 10 of 12 threads past a limit of 3; checked in the insert's
    transaction, exactly 3 pass."""
    policy = SubmitPolicy(max_active_per_address=3, max_per_minute=100, max_queued=500)
    accepted, refused = race(THREADS, lambda i: submit(store, "198.51.100.9", policy))
    assert len(accepted) == 3 and len(refused) == THREADS - 3
    assert all("your address already has 3 jobs" in r for r in refused)
    assert store.counts()["queued"] == 3


def test_concurrent_submits_through_separate_connections(store_url):
    """The same with a connection per thread, as several web app processes (or hosts) would have: the
    database's lock serialises them, not a lock inside one process."""
    policy = SubmitPolicy(max_active_per_address=3, max_per_minute=100, max_queued=500)
    stores = [open_store(store_url) for _ in range(THREADS)]
    try:
        accepted, refused = race(THREADS, lambda i: submit(stores[i], "198.51.100.9", policy))
        assert len(accepted) == 3 and len(refused) == THREADS - 3
        assert stores[0].counts()["queued"] == 3
    finally:
        for s in stores:
            s.close()


def test_operator_caps_lower_the_limits(store, monkeypatch):
    monkeypatch.setenv("T2I_MAX_SIDE", "128")
    monkeypatch.setenv("T2I_MAX_ITERATIONS", "50")
    limits = Limits.from_env()
    with pytest.raises(SpecError, match="width: must be between 64 and 128"):
        submit_job(store, "a cat", PRESET, limits=limits, width=256)
    with pytest.raises(SpecError, match="iterations: must be between 1 and 50"):
        submit_job(store, "a cat", PRESET, limits=limits, iterations=51)
    assert sum(store.counts().values()) == 0


def test_policy_from_env_reads_the_old_name_too(monkeypatch):
    monkeypatch.setenv("T2I_MAX_ACTIVE_PER_VISITOR", "5")
    assert SubmitPolicy.from_env().max_active_per_address == 5
    monkeypatch.setenv("T2I_MAX_ACTIVE_PER_ADDRESS", "7")
    assert SubmitPolicy.from_env().max_active_per_address == 7
    monkeypatch.setenv("T2I_MAX_VOTES_PER_PAIR", "2")
    monkeypatch.setenv("T2I_MAX_VOTES_PER_MINUTE", "9")
    assert VotePolicy.from_env() == VotePolicy(max_per_pair=2, max_per_minute=9)


# --- votes ---------------------------------------------------------------------------------------

def finished(store, n: int) -> list[int]:
    ids = []
    for i in range(n):
        job_id = submit_job(store, f"p{i}", PRESET, iterations=1)
        job = store.claim("w", 60)
        assert store.complete(job.lease, Result(job_id, b"g", b"p", b"t", {}, 8, 8, 1, 0.0))
        ids.append(job_id)
    return ids


def test_fresh_visitor_ids_from_one_address_get_one_vote_per_pair(store):
    """15 ids cast 15 votes, 5 on one pair; now the address's quota holds whatever the ids."""
    a, b, c = finished(store, 3)
    policy = VotePolicy(max_per_pair=1, max_per_minute=100)
    assert cast_vote(store, fresh(), "203.0.113.5", a, b, "left", policy)
    for _ in range(4):
        with pytest.raises(VoteLimit, match="this pair already has its votes from your address"):
            cast_vote(store, fresh(), "203.0.113.5", b, a, "right", policy)
    assert cast_vote(store, fresh(), "203.0.113.6", a, b, "right", policy)  # another address may
    assert cast_vote(store, fresh(), "203.0.113.5", a, c, "left", policy)   # and another pair
    records = store.vote_records()
    assert [(r["address"], r["choice"]) for r in records] == \
        [("203.0.113.5", "left"), ("203.0.113.6", "right"), ("203.0.113.5", "left")]
    assert (store.result(a).appearances, store.result(b).appearances) == (3, 2)  # refusals changed no tally
    assert store.full_pairs("203.0.113.5", 1) == {(a, b), (a, c)}


def test_a_visitor_second_vote_on_a_pair_is_refused_before_the_quota(store):
    a, b = finished(store, 2)
    voter = fresh()
    policy = VotePolicy(max_per_pair=1, max_per_minute=100)
    assert cast_vote(store, voter, "203.0.113.5", a, b, "left", policy) is True
    assert cast_vote(store, voter, "203.0.113.5", a, b, "right", policy) is False  # "your first vote stands"


def test_votes_per_minute_per_address(store):
    jobs = finished(store, 4)
    pairs = [(x, y) for i, x in enumerate(jobs) for y in jobs[i + 1:]]
    policy = VotePolicy(max_per_pair=1, max_per_minute=3)
    for pair in pairs[:3]:
        assert cast_vote(store, fresh(), "203.0.113.5", *pair, "tie", policy)
    with pytest.raises(VoteLimit, match="at most 3 votes a minute from one address"):
        cast_vote(store, fresh(), "203.0.113.5", *pairs[3], "tie", policy)
    assert cast_vote(store, fresh(), "203.0.113.6", *pairs[3], "tie", policy)
    assert len(store.vote_records()) == 4


def test_concurrent_votes_from_one_address_accept_exactly_the_limit(store):
    a, b = finished(store, 2)
    policy = VotePolicy(max_per_pair=3, max_per_minute=100)
    accepted, refused = race(THREADS, lambda i: cast_vote(store, fresh(), "198.51.100.9", a, b, "left", policy))
    assert accepted == [True] * 3 and len(refused) == THREADS - 3
    assert len(store.vote_records()) == 3 and store.result(a).wins == 3


def test_a_version_3_database_gains_addresses_and_keeps_its_jobs_and_votes(tmp_path):
    """Schema version 4 adds the address columns; rows from before have none (the fit weighs such a
    vote 1 on its own; the quotas count such a job against nobody)."""
    import sqlite3

    from t2i.store.schema import SQLITE

    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    for script in SQLITE[:3]:
        conn.executescript(script)
    for job_id in (1, 2):
        conn.execute("INSERT INTO jobs (id, spec, prompt, preset, status, total, created_at) "
                     "VALUES (?, '{}', 'a cat', ?, 'done', 1, 0)", (job_id, PRESET))
        conn.execute("INSERT INTO results (job_id, gif, png, thumbnail, parameters, width, height, seed, created_at) "
                     "VALUES (?, x'00', x'00', x'00', '{}', 8, 8, '1', 0)", (job_id,))
    conn.execute("INSERT INTO votes (voter, left_job, right_job, job_lo, job_hi, choice, created_at) "
                 "VALUES ('old-visitor', 1, 2, 1, 2, 'left', 0)")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    s = open_store(f"sqlite:///{path}")
    try:
        assert s._one("PRAGMA user_version")[0] == len(SQLITE) >= 4
        assert [(r["choice"], r["address"]) for r in s.vote_records()] == [("left", None)]
        assert address_of(s, 1) is None
        policy = SubmitPolicy(max_active_per_address=1, max_per_minute=10, max_queued=10)
        job_id = submit(s, "203.0.113.5", policy)
        assert address_of(s, job_id) == "203.0.113.5"
        assert cast_vote(s, fresh(), "203.0.113.5", 1, 2, "right", VotePolicy())
    finally:
        s.close()
