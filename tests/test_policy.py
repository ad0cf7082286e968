"""Public-page limits: per visitor (active jobs, submissions a minute) and the global queue bound."""

import pytest

from t2i.queue import QueueLimit, SubmitPolicy, submit_job
from t2i.spec import Limits, SpecError
from t2i.store import open_store


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def submit(store, who, policy, **kw):
    return submit_job(store, "a cat", "tiny-vqgan-untrained", submitter=who, policy=policy, iterations=1, **kw)


def test_active_jobs_per_visitor(store):
    policy = SubmitPolicy(max_active_per_submitter=2, max_per_minute=100, max_queued=100)
    first = submit(store, "ann", policy)
    submit(store, "ann", policy)
    with pytest.raises(QueueLimit, match="you already have 2 jobs queued or running"):
        submit(store, "ann", policy)
    submit(store, "bob", policy)  # others are not affected
    store.cancel(first)           # a finished job frees a place
    submit(store, "ann", policy)
    assert store.active_jobs("ann") == 2 and store.counts()["queued"] == 3


def test_submissions_per_minute(store):
    policy = SubmitPolicy(max_active_per_submitter=100, max_per_minute=3, max_queued=100)
    for _ in range(3):
        store.cancel(submit(store, "ann", policy))
    with pytest.raises(QueueLimit, match="at most 3 submissions a minute"):
        submit(store, "ann", policy)
    assert store.submitted_since("ann", 60) == 3


def test_global_queue_bound(store):
    policy = SubmitPolicy(max_active_per_submitter=100, max_per_minute=100, max_queued=2)
    submit(store, "ann", policy)
    submit(store, "bob", policy)
    with pytest.raises(QueueLimit, match="the queue is full"):
        submit(store, "cy", policy)
    assert store.counts()["queued"] == 2


def test_operator_caps_lower_the_limits(store, monkeypatch):
    monkeypatch.setenv("T2I_MAX_SIDE", "128")
    monkeypatch.setenv("T2I_MAX_ITERATIONS", "50")
    limits = Limits.from_env()
    with pytest.raises(SpecError, match="width: must be between 64 and 128"):
        submit_job(store, "a cat", "tiny-vqgan-untrained", limits=limits, width=256)
    with pytest.raises(SpecError, match="iterations: must be between 1 and 50"):
        submit_job(store, "a cat", "tiny-vqgan-untrained", limits=limits, iterations=51)
    assert sum(store.counts().values()) == 0
