"""The store and real executors through a real PgBouncer in transaction mode (scripts/local_pgbouncer.py, one
per test on a free port), with one LISTEN per host (t2i/store/waker.py): the store contract, several
clients shuffled over the pooler's server connections (prepared statements would break there), the
host's single listener, wake-ups counted (no herd), the listener's connection killed, and PgBouncer
restarted under running executors. Waiting polls a state with a deadline; nothing sleeps to synchronise."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from t2i.paths import ROOT
from t2i.service.queue import submit_job
from t2i.store import GroupItem, Result, open_store
from t2i.store.postgres import temporary_database
from t2i.store.waker import wake_folder

sys.path.insert(0, str(ROOT / "scripts"))
from local_pgbouncer import LocalPgBouncer, pgbouncer_binary  # noqa: E402

import polling  # noqa: E402 - tests/polling.py

pytestmark = pytest.mark.postgres
TINY = dict(iterations=4, cutn=2, save_every=1)


@pytest.fixture
def direct(pg_admin_url):
    with temporary_database(pg_admin_url, "t2i_pgb_") as url:
        yield url


@pytest.fixture
def bouncer(pg_admin_url, direct, tmp_path):
    # after `direct`, so it stops first: PostgreSQL's DROP DATABASE waits 5 s per try while a pooler holds
    # server connections to it
    if pgbouncer_binary() is None:
        pytest.fail("pgbouncer is not installed: tests/run.sh installs it (tests/setup_pgbouncer.sh)")
    with LocalPgBouncer(pg_admin_url, tmp_path / "pgbouncer", pool_size=4) as b:
        yield b


@pytest.fixture
def pooled(bouncer, direct, monkeypatch):
    """The test database through PgBouncer; LISTEN goes direct (T2I_LISTEN_DB), as documented."""
    monkeypatch.setenv("T2I_LISTEN_DB", direct)
    monkeypatch.setenv("T2I_WAKE_DIR", "/tmp")  # short socket paths (AF_UNIX allows 108 bytes)
    return bouncer.url(direct)


def wait_for(predicate, timeout=60.0, what="condition"):
    return polling.wait_for(predicate, what, timeout, interval=0.02)


def listeners(direct: str) -> list[int]:
    with psycopg.connect(direct, autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()").fetchall()]


def spec(prompt: str) -> dict:
    return {"prompt": prompt, "preset": "p"}


def result(job_id: int) -> Result:
    return Result(job_id, b"GIF89a", b"\x89PNG", b"t", {"p": 1}, 8, 8, 1, 0.0)


def test_many_clients_through_pgbouncer_each_job_done_once(pooled, direct):
    """4 clients, 4 server connections: statements land on server connections that never saw them
    before (a server-side prepared statement would be 'does not exist' there)."""
    stores = [open_store(pooled) for _ in range(4)]
    done, errors = [], []

    def work(store, n):
        try:
            for i in range(25):
                store.submit(spec(f"{n}-{i}"), batch_key="k", total=2)
                job = store.claim(f"w{n}", 60)
                assert store.progress(job.lease, 1, 0.5).alive and store.add_frame(job.lease, 1, b"frame")
                assert store.heartbeat_all(f"w{n}", [job.lease], 60)[job.id].alive
                assert store.complete(job.lease, result(job.id))
                done.append(job.id)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        assert sorted(done) == sorted(set(done)) and len(done) == 100
        assert stores[0].counts()["done"] == 100 and stores[0].result(done[0]).png == b"\x89PNG"
        assert stores[0].gallery(status="done", limit=5)[1] == 100
    finally:
        for s in stores:
            s.close()


class Waiter(threading.Thread):
    """An idle executor's wait loop: wait_for_work(long) over and over, counting wake-ups."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.store, self.woken, self.halt = open_store(url), 0, threading.Event()
        self.store.claim("idle", 60)  # an empty claim, as an executor's before it waits
        self.store.listen()

    def run(self):
        while not self.halt.is_set():
            start = time.monotonic()
            self.store.wait_for_work(20)
            if time.monotonic() - start < 19:
                self.woken += 1
                self.store.claim("idle", 60)  # what it does when woken (nothing to take here: batch keys differ)


def test_one_listener_per_host_and_a_submit_wakes_one_executor(pooled, direct):
    waiters = [Waiter(pooled) for _ in range(5)]
    submitter = open_store(pooled)
    try:
        for w in waiters:
            w.start()
        wait_for(lambda: len(listeners(direct)) == 1, what="the host's relay listening")
        woken = lambda: sum(w.woken for w in waiters)  # noqa: E731
        submitter.submit(spec("one"), batch_key="x", total=1)
        wait_for(lambda: woken() == 1, what="one executor woken")
        submitter.submit_group([GroupItem(spec("a"), "x", 1), GroupItem(spec("b"), "x", 1)])
        wait_for(lambda: woken() == 3, what="two more woken by a group of two")
        # a herd would have woken all five at each submit; give stray wake-ups a chance to show
        probe = open_store(pooled)
        probe.submit(spec("last"), batch_key="x", total=1)
        wait_for(lambda: woken() >= 4, what="the last submit's wake-up")
        assert woken() == 4
        assert len(listeners(direct)) == 1  # five executors, one LISTEN connection
        probe.close()
    finally:
        for w in waiters:
            w.halt.set()
        submitter.submit_group([GroupItem(spec("stop"), "x", 1)] * 5)  # wakes all five: they see halt at once
        for w in waiters:
            w.join(timeout=25)
            w.store.close()
        submitter.close()
    assert listeners(direct) == []  # the relay closed with its executor's store


def idle_at_relay(waiters) -> int:
    """How many executors the host's relay (one of the waiters' stores holds it) knows to be waiting."""
    relays = [w.store._waker.relay for w in waiters if w.store._waker and w.store._waker.relay]
    return len(relays[0].idle) if relays else 0


def test_the_listeners_connection_killed_wakes_everyone_and_it_listens_again(pooled, direct):
    waiters = [Waiter(pooled) for _ in range(3)]
    other = open_store(pooled)
    try:
        for w in waiters:
            w.start()
        (pid,) = wait_for(lambda: listeners(direct), what="the relay listening")
        wait_for(lambda: idle_at_relay(waiters) == 3, what="all three waiting (registered with the relay)")
        with psycopg.connect(direct, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # every idle executor looks for work at once (a wake-up may have been lost), nothing waits 20 s
        wait_for(lambda: all(w.woken >= 1 for w in waiters), what="every waiter woken after the drop")
        (again,) = wait_for(lambda: listeners(direct), what="the relay listening again")
        assert again != pid
        before = sum(w.woken for w in waiters)
        other.submit(spec("after"), batch_key="x", total=1)
        # (>=: the relay's wake-all after its reconnect may land after `before` was read)
        wait_for(lambda: sum(w.woken for w in waiters) >= before + 1, what="a wake-up after the reconnect")
    finally:
        for w in waiters:
            w.halt.set()
        other.submit_group([GroupItem(spec("stop"), "x", 1)] * 3)
        for w in waiters:
            w.join(timeout=25)
            w.store.close()
        other.close()


@pytest.mark.subprocess
def test_pgbouncer_restarted_under_running_executors_loses_nothing(pooled, direct, bouncer, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "T2I_CHECKPOINTS": str(tmp_path / "none")}
    store = open_store(direct)
    ids = [submit_job(store, f"job {i}", "tiny-vqgan-untrained", seed=i, **TINY) for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "job_executor.py", "--db", pooled, "--device", "cpu", "--poll", "0.1"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    def running():
        assert all(p.poll() is None for p in procs), "an executor exited"
        return any(j.status == "running" and j.step >= 1 for j in store.jobs(limit=20))

    try:
        wait_for(running, timeout=120, what="a job running with progress")
        bouncer.restart()  # every client connection dropped mid-run
        wait_for(lambda: store.counts()["done"] == 8, timeout=180, what="the first 8 jobs done")
        later = [submit_job(store, f"later {i}", "tiny-vqgan-untrained", seed=i, **TINY) for i in range(2)]
        wait_for(lambda: store.counts()["done"] == 10, timeout=120, what="jobs submitted after the restart done")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    assert store.counts() == {"queued": 0, "running": 0, "done": 10, "failed": 0, "cancelled": 0}
    for job_id in ids + later:
        assert store.result(job_id).png[:4] == b"\x89PNG"
        assert store.get(job_id).attempts == 1  # nothing ran twice
    store.close()


def test_idle_executors_poll_rarely_only_while_the_relay_listens(pooled, direct):
    store = open_store(pooled)
    alive = wake_folder(direct) / "relay.alive"
    try:
        wait_for(store.wakeups_reliable, what="the relay listening")  # listen() made this store the relay
        (pid,) = listeners(direct)
        with psycopg.connect(direct, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: not store.wakeups_reliable() or listeners(direct) not in ([], [pid]),
                 what="the relay's drop noticed or its new LISTEN")
        wait_for(lambda: store.wakeups_reliable() and listeners(direct) not in ([], [pid]), what="listening again")
    finally:
        store.close()
    assert not alive.exists()  # the relay stopped with its executor: the others poll at max_poll again
