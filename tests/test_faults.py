"""Operator faults: the database server dropping its connections or going away, a full disk, a
read-only or deleted SQLite file. Real parts only: the local PostgreSQL server (connections really
terminated, connections to the database really refused), real mounts (a small tmpfs filled up, a
read-only bind mount) where this machine allows mounting, real SQLite files.

Executors run in this process (the tiny preset), so a fault can be caused between two of a job's
steps; the test then waits for a state (a logged line, a job's status) with a generous bound.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import uuid
from contextlib import contextmanager

import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from t2i.service import executor as executor_module
from t2i.service.executor import EXIT_STORE_GONE, Executor, ExecutorConfig
from t2i.paths import ROOT
from t2i.service.queue import submit_job
from t2i.store import StoreError, StoreGone, StoreUnavailable, open_store
from t2i.store import postgres as postgres_module
from t2i.web import common

from small_disks import fill, mount_or_skip, umount  # tests/small_disks.py

TINY = dict(iterations=2, cutn=2, save_every=1)
BOUND = 60.0  # seconds: a generous bound on waiting for a state, never a measured time


# --- helpers ------------------------------------------------------------------------------

def terminate_backends(pg_url: str) -> int:
    """What a restart, a failover or an idle timeout does to the store's connections."""
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                             "AND pid <> pg_backend_pid()", (name,)).fetchall()
    return len(rows)


@contextmanager
def database_down(pg_url: str):
    """The database refuses connections (and has dropped the open ones) for the block's duration."""
    name = pg_url.rsplit("/", 1)[1]
    admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    terminate_backends(pg_url)
    try:
        yield
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def set_down(pg_url: str, down: bool) -> None:
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
    if down:
        terminate_backends(pg_url)


class LogWatch(logging.Handler):
    """Records t2i's log lines; `seen(text)` is set once a line containing text was logged."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def seen(self, text: str) -> threading.Event:
        with self._lock:
            event = self._events.setdefault(text, threading.Event())
            if any(text in r.getMessage() for r in self.records):
                event.set()
        return event

    def emit(self, record):
        with self._lock:
            self.records.append(record)
            for text, event in self._events.items():
                if text in record.getMessage():
                    event.set()

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info]


@pytest.fixture
def logwatch():
    watch = LogWatch()
    logger = logging.getLogger("t2i")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(old)


@contextmanager
def at_step(step_index: int, action):
    """Run action() once, after the executor's batch step number step_index (counted from 1)."""
    real_step = executor_module.Runner.step
    count = {"n": 0}

    def step(runner):
        result = real_step(runner)
        count["n"] += 1
        if count["n"] == step_index:
            action()
        return result

    executor_module.Runner.step = step
    try:
        yield
    finally:
        executor_module.Runner.step = real_step


def run_in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: room for a database and a few tiny jobs, and quick to fill."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount_or_skip("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt))
    yield mnt
    umount(mnt)


@pytest.fixture
def fresh_web_store(monkeypatch):
    """The web app's shared store starts uncached; the stores it opened are closed afterwards (an
    open connection would keep the test database from being dropped)."""
    opened = []

    def recording(url, **kwargs):
        opened.append(open_store(url, **kwargs))
        return opened[-1]

    common._store.clear()
    monkeypatch.setattr(common, "open_store", recording)
    yield
    common._store.clear()
    for store in opened:
        store.close()


def page(url, monkeypatch) -> AppTest:
    """The leaderboard page, whose every run reads the store (votes), on the database at url."""
    monkeypatch.setenv("T2I_DB", url)
    at = AppTest.from_file(str(ROOT / "t2i" / "web" / "leaderboard.py"), default_timeout=60)
    at.run()
    return at


# --- 1. PostgreSQL: connections terminated, the database refusing connections ----------------

def test_the_same_postgres_store_works_after_its_connections_were_terminated(pg_url):
    store = open_store(pg_url)
    other = open_store(pg_url)
    try:
        first = submit_job(store, "before", "tiny-vqgan-untrained", **TINY)
        store.listen()
        assert terminate_backends(pg_url) >= 3  # the store's, its listener's and the other store's
        assert store.get(first).prompt == "before"                   # a read
        second = submit_job(store, "after", "tiny-vqgan-untrained", **TINY)  # a write
        job = store.claim("w", 60)
        assert job.id == first and store.heartbeat(job.lease, 60).alive
        terminate_backends(pg_url)
        assert store.cancel(second) == "cancelled"                   # a transaction
        store.wait_for_work(0.01)                                    # finds its listener gone
        store.listen()                                               # and listens again
        third = submit_job(other, "wake up", "tiny-vqgan-untrained", **TINY)
        store.wait_for_work(30)  # returns on the NOTIFY; the bound only stops a broken test
        assert store.counts() == {"queued": 1, "running": 1, "done": 0, "failed": 0, "cancelled": 1}
        assert store.get(third).status == "queued"
    finally:
        store.close()
        other.close()


def test_a_postgres_store_reports_an_unreachable_database_and_recovers(pg_url, monkeypatch):
    monkeypatch.setattr(postgres_module, "RECONNECT_SECONDS", 0.5)  # give up sooner than in service
    store = open_store(pg_url)
    try:
        job_id = submit_job(store, "kept", "tiny-vqgan-untrained", **TINY)
        with database_down(pg_url):
            with pytest.raises(StoreUnavailable) as caught:
                store.get(job_id)
            assert "\n" not in str(caught.value) and "t2i_test:" not in str(caught.value)
            with pytest.raises(StoreUnavailable):
                submit_job(store, "lost", "tiny-vqgan-untrained", **TINY)
        assert store.get(job_id).prompt == "kept"
        assert store.counts()["queued"] == 1
    finally:
        store.close()


def test_an_executor_rides_through_terminated_connections_and_an_outage(pg_url, logwatch, monkeypatch):
    monkeypatch.setattr(postgres_module, "RECONNECT_SECONDS", 0.5)  # give up sooner than in service
    setup = open_store(pg_url)
    ids = [submit_job(setup, f"job {i}", "tiny-vqgan-untrained", seed=i, **TINY) for i in range(3)]
    ex = Executor(ExecutorConfig(db=pg_url, once=True, batch="1", poll=0.05))

    def outage():
        # After the first step: connections dropped, and the database refuses new ones until the
        # executor has noticed (it logs one line), then it comes back.
        set_down(pg_url, True)
        threading.Thread(target=lambda: (logwatch.seen("the job store failed").wait(BOUND),
                                         set_down(pg_url, False)), daemon=True).start()

    try:
        with at_step(1, outage):
            assert ex.run() == 0
    finally:
        set_down(pg_url, False)
        ex.close()
    try:
        for job_id in ids:
            job = setup.get(job_id)
            assert (job.status, job.attempts) == ("done", 1), job
        assert logwatch.seen("the job store works again").is_set()
        assert logwatch.tracebacks() == []
    finally:
        setup.close()


def test_web_pages_ride_through_terminated_connections(pg_url, monkeypatch, fresh_web_store):
    at = page(pg_url, monkeypatch)
    assert not at.exception and not at.error
    terminate_backends(pg_url)
    at.run()
    assert not at.exception and not at.error and not at.warning


def test_web_pages_say_the_database_is_not_reachable(monkeypatch, fresh_web_store):
    at = page("postgresql://t2i_test:t2i_test@127.0.0.1:1/t2i", monkeypatch)  # nothing listens on port 1
    assert not at.exception
    assert [w.value for w in at.warning] == [common.UNREACHABLE]


def test_web_pages_say_the_database_is_not_reachable_when_it_goes_away(pg_url, monkeypatch, fresh_web_store):
    monkeypatch.setattr(postgres_module, "RECONNECT_SECONDS", 0.5)
    at = page(pg_url, monkeypatch)
    assert not at.exception and not at.warning
    with database_down(pg_url):
        at.run()
        assert not at.exception
        assert [w.value for w in at.warning] == [common.UNREACHABLE]
    at.run()
    assert not at.exception and not at.warning and not at.error


# --- 2. SQLite: a full disk, a read-only database, a deleted file ---------------------------

def test_a_full_disk_stalls_an_executor_without_failing_its_job(small_disk, logwatch):
    url = f"sqlite:///{small_disk / 't2i.db'}"
    setup = open_store(url)
    job_id = submit_job(setup, "patience", "tiny-vqgan-untrained", **TINY)
    ex = Executor(ExecutorConfig(db=url, once=True, poll=0.05))
    filler = {}

    def disk_full():
        filler["path"] = fill(small_disk)
        threading.Thread(target=lambda: (logwatch.seen("the job store failed").wait(BOUND),
                                         os.remove(filler["path"])), daemon=True).start()

    try:
        with at_step(1, disk_full):
            thread, code = run_in_thread(ex.run)
            thread.join(BOUND)
        assert not thread.is_alive() and code == [0]
    finally:
        ex.close()
    try:
        assert "disk holding it is full" in " ".join(r.getMessage() for r in logwatch.records)
        job = setup.get(job_id)
        assert (job.status, job.attempts) == ("done", 1), job
        assert setup.result(job_id).png[:4] == b"\x89PNG"
        assert logwatch.tracebacks() == []
    finally:
        setup.close()


def test_a_full_disk_is_logged_ever_more_rarely_and_thins_the_jobs_frames(small_disk, logwatch):
    # Reads and empty claims work on a full disk while every write fails: each step used to log a
    # failure and a recovery, and each frame was one more failed write.
    url = f"sqlite:///{small_disk / 't2i.db'}"
    setup = open_store(url)
    job_id = submit_job(setup, "a long wait", "tiny-vqgan-untrained", iterations=40, cutn=2, save_every=1)
    ex = Executor(ExecutorConfig(db=url, once=True, poll=0.05, keep_frames=True))
    filler = {}
    try:
        with at_step(3, lambda: filler.update(path=fill(small_disk))), at_step(30, lambda: os.remove(filler["path"])):
            thread, code = run_in_thread(ex.run)
            thread.join(BOUND)
        assert not thread.is_alive() and code == [0]
    finally:
        ex.close()
    try:
        job = setup.get(job_id)
        assert (job.status, job.attempts) == ("done", 1), job
        failures = [r.getMessage() for r in logwatch.records if r.getMessage().startswith("the job store failed")]
        assert 2 <= len(failures) <= 7, failures   # the 1st, 2nd, 4th, ... of the 27 steps' failures
        assert "disk holding it is full" in failures[0] and "(2 failures so far)" in failures[1]
        steps = [step for step, _ in setup.frames(job_id)]
        assert steps[:2] == [0, 1]                 # written before the disk filled
        assert len([s for s in steps if s >= 30]) <= 3, steps  # after it: at most every 4th of 10
        assert logwatch.tracebacks() == []
    finally:
        setup.close()


def test_a_job_stopped_by_sigterm_while_the_disk_is_full_spends_no_attempt(small_disk, logwatch):
    url = f"sqlite:///{small_disk / 't2i.db'}"
    setup = open_store(url)
    job_id = submit_job(setup, "stopped", "tiny-vqgan-untrained", iterations=40, cutn=2, save_every=1)
    ex = Executor(ExecutorConfig(db=url, poll=0.05))
    previous = signal.signal(signal.SIGTERM, ex.request_stop)  # as job_executor.py installs it
    filler = {}

    def full_then_sigterm():
        filler["path"] = fill(small_disk)
        os.kill(os.getpid(), signal.SIGTERM)   # handled in this (the main) thread

    try:
        with at_step(2, full_then_sigterm):
            thread, code = run_in_thread(ex.run)
            assert logwatch.seen("the store failed while stopping; trying again").wait(BOUND)
            os.remove(filler["path"])
            thread.join(BOUND)
        assert not thread.is_alive() and code == [0]
    finally:
        signal.signal(signal.SIGTERM, previous)
        ex.trouble.give_up.set()
        ex.close()
    try:
        job = setup.get(job_id)
        assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None), job
        assert setup.frames(job_id) == []
        assert logwatch.tracebacks() == []
    finally:
        setup.close()


def test_a_store_on_a_full_disk_fails_with_one_line(small_disk):
    store = open_store(f"sqlite:///{small_disk / 't2i.db'}")
    try:
        path = fill(small_disk)
        with pytest.raises(StoreError) as caught:
            for i in range(200):  # the WAL may still have room for the first few
                submit_job(store, "x" * 900, "tiny-vqgan-untrained", **TINY)
        assert str(caught.value).endswith("cannot be used: the disk holding it is full"), caught.value
        assert store.counts()["queued"] < 200  # reads still work
        os.remove(path)
        submit_job(store, "room again", "tiny-vqgan-untrained", **TINY)
    finally:
        store.close()


@pytest.fixture
def read_only_db(tmp_path):
    """A job database with one queued job, seen through a read-only bind mount (root ignores chmod,
    but not a read-only mount); yields (url through the read-only path, the read-only folder, job id).
    A store stays open on the writable path, as a running service would: SQLite opens a WAL database
    read-only only while its shared-memory file exists."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    service = open_store(f"sqlite:///{src / 't2i.db'}")
    job_id = submit_job(service, "read-only for now", "tiny-vqgan-untrained", **TINY)
    mount_or_skip("--bind", str(src), str(ro))
    try:
        mount_or_skip("-o", "remount,bind,ro", str(ro))
        yield f"sqlite:///{ro / 't2i.db'}", ro, job_id
    finally:
        umount(ro)
        service.close()


def test_a_read_only_database_reads_and_refuses_writes_with_one_line(read_only_db):
    url, _, job_id = read_only_db
    store = open_store(url)
    try:
        assert store.get(job_id).status == "queued"
        with pytest.raises(StoreError) as caught:
            submit_job(store, "no room", "tiny-vqgan-untrained", **TINY)
        assert str(caught.value).endswith("cannot be used: it is read-only"), caught.value
    finally:
        store.close()


def test_an_executor_waits_out_a_read_only_database_and_spends_no_attempt(read_only_db, logwatch):
    url, ro, job_id = read_only_db
    ex = Executor(ExecutorConfig(db=url, once=True, poll=0.05))
    try:
        thread, code = run_in_thread(ex.run)
        assert logwatch.seen("it is read-only").wait(BOUND)
        assert ex.store.get(job_id).attempts == 0
        subprocess.run(["mount", "-o", "remount,bind,rw", str(ro)], check=True, timeout=30)
        thread.join(BOUND)
        assert not thread.is_alive() and code == [0]
        job = ex.store.get(job_id)
        assert (job.status, job.attempts) == ("done", 1), job
    finally:
        ex.stopping.set()
        ex.close()
    assert logwatch.tracebacks() == []


def test_an_executor_stops_with_one_line_when_its_database_file_is_deleted(tmp_path, logwatch):
    path = tmp_path / "t2i.db"
    setup = open_store(f"sqlite:///{path}")
    submit_job(setup, "lost with its file", "tiny-vqgan-untrained", iterations=3, cutn=2, save_every=1)
    setup.close()
    ex = Executor(ExecutorConfig(db=f"sqlite:///{path}", poll=0.05))
    try:
        with at_step(1, lambda: os.remove(path)):
            assert ex.run() == EXIT_STORE_GONE
        with pytest.raises(StoreGone):
            ex.store.counts()
    finally:
        ex.close()
    errors = [r.getMessage() for r in logwatch.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "was deleted while in use" in errors[0] and errors[0].endswith("stopping")
    assert logwatch.tracebacks() == []
    assert not path.exists()  # nothing recreated an empty database behind the operator's back


def test_a_store_notices_its_file_was_replaced(tmp_path):
    path = tmp_path / "t2i.db"
    store = open_store(f"sqlite:///{path}")
    try:
        submit_job(store, "in the old file", "tiny-vqgan-untrained", **TINY)
        # As an operator restoring a backup should: nothing of the old file left in its WAL (SQLite
        # would apply a stale WAL at the path to whatever file is put there).
        store._one("PRAGMA wal_checkpoint(TRUNCATE)")
        replacement = open_store(f"sqlite:///{tmp_path / 'restored.db'}")
        replacement.close()
        os.replace(tmp_path / "restored.db", path)
        with pytest.raises(StoreGone) as caught:
            submit_job(store, "would be lost", "tiny-vqgan-untrained", **TINY)
        assert "replaced" in str(caught.value)
    finally:
        store.close()
    reopened = open_store(f"sqlite:///{path}")
    try:
        assert reopened.counts()["queued"] == 0  # the restored file, untouched by the old store
    finally:
        reopened.close()


def test_web_pages_say_the_service_cannot_take_jobs_when_the_store_fails(tmp_path, monkeypatch, fresh_web_store):
    path = tmp_path / "t2i.db"
    at = page(f"sqlite:///{path}", monkeypatch)
    assert not at.exception and not at.error
    os.remove(path)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [common.CANNOT_TAKE_JOBS]
    at.run()  # the next run opens what is at the path now (the service start creates it)
    assert not at.exception and not at.error
    folder = tmp_path / "a-folder"
    folder.mkdir()
    common._store.clear()
    at = page(f"sqlite:///{folder}", monkeypatch)
    assert not at.exception
    assert [e.value for e in at.error] == [common.CANNOT_TAKE_JOBS]


def test_the_service_start_creates_the_database(tmp_path, monkeypatch, fresh_web_store):
    path = tmp_path / "new" / "t2i.db"
    at = page(f"sqlite:///{path}", monkeypatch)
    assert not at.exception and not at.error and path.is_file()
    other = tmp_path / "other" / f"{uuid.uuid4().hex}.db"
    ex = Executor(ExecutorConfig(db=f"sqlite:///{other}", once=True))
    try:
        assert ex.run() == 0 and other.is_file()
    finally:
        ex.close()


@contextmanager
def busy_server_proxy(pg_url: str, message: str, refusals: int):
    """A TCP proxy in front of the real server that answers its first `refusals` connections as a busy
    PostgreSQL does (refuse TLS, then a FATAL ErrorResponse with `message` to the startup packet) and
    passes every later one through. Yields (the URL through the proxy, a list of connections refused)."""
    import socket
    from urllib.parse import urlsplit

    real = urlsplit(pg_url)
    listener = socket.create_server(("127.0.0.1", 0))
    refused, stop = [], threading.Event()

    def pipe(a, b):
        with a, b:
            while data := a.recv(65536):
                b.sendall(data)

    def refuse(client):
        with client:
            packet = client.recv(8)
            if packet[4:8] == (80877103).to_bytes(4, "big"):  # SSLRequest: "no TLS here", then the startup
                client.sendall(b"N")
                client.recv(65536)
            fields = b"SFATAL\0VFATAL\0C57P03\0M" + message.encode() + b"\0\0"
            # Counted before the answer goes out: a client that raises on reading it may be asserted on
            # before this thread runs again (CI saw 0 refusals counted for a refusal already raised).
            refused.append(message)
            client.sendall(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)

    def serve():
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if len(refused) < refusals:
                refuse(client)
                continue
            upstream = socket.create_connection((real.hostname, real.port or 5432))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        yield real._replace(netloc=real.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port}").geturl(), refused
    finally:
        stop.set()
        listener.close()


def test_opening_a_postgres_store_waits_for_a_busy_server_but_not_for_a_wrong_password(pg_url):
    """An executor restarted while the server restarts or its disk is full (the chaos run found one
    exiting) waits for it; a refusal that waiting cannot mend is one line at once."""
    with busy_server_proxy(pg_url, "the database system is starting up", refusals=3) as (url, refused):
        store = open_store(url)
        try:
            assert len(refused) == 3 and store.counts()["queued"] == 0
        finally:
            store.close()
    with busy_server_proxy(pg_url, 'password authentication failed for user "t2i"', refusals=5) as (url, refused):
        with pytest.raises(StoreUnavailable, match="password authentication failed") as caught:
            open_store(url)
        assert len(refused) == 1 and "\n" not in str(caught.value)
