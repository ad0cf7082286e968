"""Fleet simulation: N executors without models, visitors submitting and browsing, on SQLite and PostgreSQL.

What one simulated executor does is what t2i/service/executor.py does for a batch of one, with sleeps for the
model: listen, sweep, claim; idle: worker_seen (every SEEN_EVERY) and wait_for_work with the poll
doubling up to max_poll. A claimed job runs `--steps` steps of `--step-ms`; after each step, a frame
(`--frame-kb` of incompressible bytes, like a PNG) every `--save-every` steps, progress at most every
PROGRESS_EVERY (and with each frame and at the last step), a heartbeat every lease/3 (inline between
steps, where the executor has a thread: the database sees the same statements); then complete() with
a GIF (`--gif-frame-kb` per frame), a PNG and a thumbnail. A store error on progress, a frame, a
heartbeat or worker_seen is counted and skipped, complete() is retried, as the executor does.

--time-scale S divides every interval (step, lease, progress, seen, poll) by S: one simulated executor
then loads the database like S real ones (every per-second rate times S), with one connection instead
of S. Results are reported per simulated executor and per real-executor equivalent.

Executors are threads in --processes processes (spawn), each with its own store (own connections:
PostgreSQL also opens one for LISTEN, as the executor does). --kill-rate is the fraction of jobs whose
executor dies mid-job: it stops writing, drops its connections and comes back under a new worker id;
the lease expires and a sweep requeues the job. Visitors in the main process: one submitter at
--submit-rate jobs/s (default 90% of the fleet's capacity) and --browsers threads that read gallery
pages every --browse-interval seconds (the latency measured is the gallery's p50/p95).

The queue starts with --backlog jobs (default N), and each executor takes its first one up mid-way,
so the window sees a fleet in steady state rather than its ramp-up; pickup latencies count the jobs
submitted in the window only. The load phase lasts --seconds; rates count that window only. Then
submitting stops and the fleet drains: every submitted job must end done exactly once (no job
completed twice, none lost, results and counts agree), else the script exits 1 naming what went wrong.

Measured besides: database size before/after (SQLite: file + WAL; PostgreSQL: pg_database_size),
PostgreSQL transactions (pg_stat_database.xact_commit) and WAL bytes, connections and backends waiting
on locks (sampled every second from pg_stat_activity), CPU (from /proc: the machine, the client
processes, the postgres processes of this database and the server's own). Monitoring queries read
PostgreSQL's catalog, not the job tables, which is why they live here and not in t2i/store.

Run:  PYTHONPATH=. .venv/bin/python scripts/simulate_fleet.py --executors 10 100 --seconds 60 --report /tmp/fleet.md
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `t2i`

from t2i.spec import make_spec  # noqa: E402
from t2i.store import Result, StoreError, open_store  # noqa: E402

PG_ADMIN = "postgresql://t2i_test:t2i_test@127.0.0.1:5432/postgres"
PROGRESS_EVERY, SEEN_EVERY = 0.5, 5.0  # t2i/service/executor.py's (real seconds)
WORDS = "red green blue small large circle square triangle star shape on the left right top bottom".split()
# Connections opened at once per process: a fleet starts over minutes, not in one second (2,000
# simultaneous connects time out on a 2-core server: the postmaster forks one backend per connection).
OPENING = 8
WRITES = ("claim", "progress", "frame", "heartbeat", "complete", "sweep", "seen")


@dataclass
class Config:
    url: str
    steps: int = 300
    step_s: float = 0.1          # real seconds per step (a GPU); divided by time_scale
    save_every: int = 10
    frame_bytes: int = 100_000
    png_bytes: int = 110_000
    thumb_bytes: int = 6_000
    gif_frame_bytes: int = 40_000
    lease: float = 60.0
    poll: float = 0.5
    max_poll: float = 5.0
    time_scale: float = 1.0
    kill_rate: float = 0.0
    claim_many: bool = False     # use claim_many(n=1) and heartbeat_all when the store has them
    seed: int = 0

    def s(self, seconds: float) -> float:
        return seconds / self.time_scale

    @property
    def job_seconds(self) -> float:
        return self.s(self.steps * self.step_s)

    @property
    def result_bytes(self) -> int:
        return self.png_bytes + self.thumb_bytes + self.gif_frame_bytes * (self.steps // self.save_every + 1)


@dataclass
class Stats:
    """One thread's counts (whole run) and latencies (load window only), merged at the end."""

    counts: dict = field(default_factory=dict)
    lat: dict = field(default_factory=dict)
    pickups: list = field(default_factory=list)
    done: list = field(default_factory=list)       # job ids this thread completed (complete() True)
    durations: list = field(default_factory=list)  # seconds per completed job (load window)

    def add(self, op: str, seconds: float | None = None, in_window: bool = True, n: int = 1) -> None:
        key = op if in_window else op + "@drain"
        self.counts[key] = self.counts.get(key, 0) + n
        if seconds is not None and in_window:
            self.lat.setdefault(op, []).append(seconds)

    def merge(self, other: "Stats") -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        for k, v in other.lat.items():
            self.lat.setdefault(k, []).extend(v)
        self.pickups += other.pickups
        self.done += other.done
        self.durations += other.durations


class Died(Exception):
    """The simulated executor dies mid-job (--kill-rate)."""


class SimExecutor:
    def __init__(self, cfg: Config, name: str, window: tuple[float, float], stop: threading.Event, blobs: dict):
        self.cfg, self.name, self.window, self.stop, self.blobs = cfg, name, window, stop, blobs
        self.stats = Stats()
        self.rng = random.Random(f"{cfg.seed}-{name}")
        self.store = None
        self.generation = 0
        self.kill_due = self.rng.random()
        self.joined = True  # the first job is taken from the backlog mid-way

    def inw(self) -> bool:
        return self.window[0] <= time.time() < self.window[1]

    def call(self, op: str, fn, *, optional: bool = True):
        """fn() timed and counted; a StoreError is counted and returns None when optional."""
        t = time.monotonic()
        try:
            out = fn()
        except StoreError:
            self.stats.add(op + " error", in_window=self.inw())
            if not optional:
                raise
            return None
        self.stats.add(op, time.monotonic() - t, self.inw())
        return out

    def open(self):
        self.store = open_store(self.cfg.url)
        self.store.listen()  # the executor subscribes before its first claim (PostgreSQL: a second connection)

    @property
    def worker_id(self) -> str:
        return f"{self.name}-g{self.generation}"

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.store is None:
                    self.open()
                self.loop()
            except Died:
                self.stats.add("killed", in_window=self.inw())
                self.store.close()  # its connections drop; its lease is left to expire
                self.store, self.generation = None, self.generation + 1
                self.stop.wait(self.cfg.s(1.0))  # a supervisor restarts it
            except StoreError:
                self.stats.add("loop error", in_window=self.inw())
                self.stop.wait(self.cfg.s(self.cfg.poll))
        if self.store is not None:
            self.store.close()

    def loop(self) -> None:
        cfg, store = self.cfg, self.store
        delay, seen_at = cfg.s(cfg.poll), -math.inf
        while not self.stop.is_set():
            store.listen()
            self.call("sweep", store.sweep, optional=False)
            if cfg.claim_many:
                jobs = self.call("claim", lambda: store.claim_many(self.worker_id, cfg.s(cfg.lease), 1), optional=False)
                job = jobs[0] if jobs else None
            else:
                job = self.call("claim", lambda: store.claim(self.worker_id, cfg.s(cfg.lease)), optional=False)
            if job is None:
                self.stats.add("empty claim", in_window=self.inw())
                if time.monotonic() - seen_at >= cfg.s(SEEN_EVERY):
                    seen_at = time.monotonic()
                    self.call("seen", lambda: store.worker_seen(self.worker_id, host="sim", device="none", job_id=None))
                store.wait_for_work(delay)
                delay = min(delay * 2, cfg.s(cfg.max_poll))
                continue
            delay = cfg.s(cfg.poll)
            if job.attempts == 1 and self.inw() and job.created_at >= self.window[0]:  # not the backlog
                self.stats.pickups.append(job.started_at - job.created_at)
            seen_at = time.monotonic()
            self.call("seen", lambda: store.worker_seen(self.worker_id, host="sim", device="none", job_id=job.id))
            self.run_job(job)

    def run_job(self, job) -> None:
        cfg, store, lease = self.cfg, self.store, job.lease
        # Deaths spread evenly: the kill_rate-th part of each executor's jobs, from a random phase.
        self.kill_due += cfg.kill_rate
        die_at = None
        if self.kill_due >= 1:
            self.kill_due -= 1
            die_at = self.rng.randint(1, job.total)
        start = last_progress = last_beat = seen_at = time.monotonic()
        first = 1
        if self.joined:  # the fleet was running before the window: this job started earlier
            self.joined, first = False, self.rng.randint(1, job.total)
            start -= (first - 1) * cfg.s(cfg.step_s)
        for step in range(first, job.total + 1):
            if self.stop.wait(cfg.s(cfg.step_s)):
                return
            if step == die_at:
                raise Died
            now = time.monotonic()
            frame = step % cfg.save_every == 0
            if frame and self.call("frame", lambda: store.add_frame(lease, step, self.blobs["frame"])) is False:
                return self.lost("frame")
            if frame or step == job.total or now - last_progress >= cfg.s(PROGRESS_EVERY):
                last_progress = now
                beat = self.call("progress", lambda: store.progress(lease, step, 0.5))
                if beat is not None and not beat.alive:
                    return self.lost("progress")
            if now - last_beat >= cfg.s(cfg.lease) / 3:
                last_beat = now
                if not self.heartbeat(lease):
                    return self.lost("heartbeat")
            if now - seen_at >= cfg.s(SEEN_EVERY):
                seen_at = now
                self.call("seen", lambda: store.worker_seen(self.worker_id, host="sim", device="none", job_id=job.id))
        result = Result(job_id=job.id, gif=self.blobs["gif"], png=self.blobs["png"], thumbnail=self.blobs["thumb"],
                        parameters={"sim": True}, width=256, height=256, seed=job.id, created_at=0.0)
        while not self.stop.is_set():  # the executor retries a result until the store takes it
            ok = self.call("complete", lambda: store.complete(lease, result))
            if ok is None:
                self.stop.wait(cfg.s(cfg.poll))
                continue
            if not ok:
                return self.lost("complete")
            self.stats.done.append(job.id)
            if self.inw():
                self.stats.durations.append(time.monotonic() - start)
            return

    def heartbeat(self, lease) -> bool:
        if self.cfg.claim_many:
            alive = self.call("heartbeat", lambda: self.store.heartbeat_all(self.worker_id, [lease],
                                                                            self.cfg.s(self.cfg.lease)))
            return alive is None or _alive_in(alive, lease)
        beat = self.call("heartbeat", lambda: self.store.heartbeat(lease, self.cfg.s(self.cfg.lease)))
        return beat is None or beat.alive

    def lost(self, where: str) -> None:
        self.stats.add("lease lost", in_window=self.inw())
        self.stats.add(f"lease lost in {where}", in_window=self.inw())


def _alive_in(answer, lease) -> bool:
    """heartbeat_all's answer, whatever its shape: leases (or job ids) still held, or a dict to Beats."""
    if isinstance(answer, dict):
        beat = answer.get(lease, answer.get(lease.job_id))
        return bool(getattr(beat, "alive", beat))
    return lease in answer or lease.job_id in answer


def worker_process(cfg: Config, proc: int, count: int, ready, start, window, stop, out) -> None:
    """count executor threads; each reports ready (or its error) once its store is open."""
    rng = random.Random(proc)
    blobs = {"frame": rng.randbytes(cfg.frame_bytes), "png": rng.randbytes(cfg.png_bytes),
             "thumb": rng.randbytes(cfg.thumb_bytes),
             "gif": rng.randbytes(cfg.gif_frame_bytes * (cfg.steps // cfg.save_every + 1))}
    local_stop, win = threading.Event(), [0.0, 0.0]
    execs = [SimExecutor(cfg, f"p{proc}e{i}", win, local_stop, blobs) for i in range(count)]

    gate = threading.Semaphore(OPENING)

    def opener(ex):
        try:
            with gate:
                ex.open()
            ready.put(None)
        except Exception as e:  # noqa: BLE001 - reported to the main process (too many connections, ...)
            ready.put(f"{ex.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    openers = [threading.Thread(target=opener, args=(ex,)) for ex in execs]
    for t in openers:
        t.start()
    for t in openers:
        t.join()
    start.wait()
    win[0], win[1] = window[0], window[1]
    threads = [threading.Thread(target=ex.run, daemon=True) for ex in execs if ex.store is not None]
    for t in threads:
        t.start()
    while not stop.wait(0.2):
        if not mp.parent_process().is_alive():
            break
    local_stop.set()
    for t in threads:
        t.join(timeout=30)
    for ex in execs:
        if ex.store is not None:
            try:
                ex.store.close()
            except Exception:  # noqa: BLE001 - closing after the run; nothing to report
                pass
    total = Stats()
    for ex in execs:
        total.merge(ex.stats)
    out.put(total)


# --- monitoring (/proc and PostgreSQL's catalog) ------------------------------------------------
def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def _machine() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(parts), parts[3] + parts[4]  # total, idle + iowait


class Monitor(threading.Thread):
    """Every second: CPU of the clients, this database's postgres backends and the server's own
    processes (by /proc deltas), connections and lock waits (pg_stat_activity)."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, pg_url: str | None, client_pids: list[int]):
        super().__init__(daemon=True)
        self.pg_url, self.client_pids = pg_url, client_pids
        self.halt = threading.Event()
        self.cpu = {"clients": 0, "db backends": 0, "db server": 0}
        self.samples: list[dict] = []
        self.waits: dict[str, int] = {}  # wait event -> backends seen waiting on it, summed over samples
        self.conn = None
        if pg_url:
            import psycopg

            self.conn = psycopg.connect(pg_url, autocommit=True)

    def pg(self, sql: str):
        return self.conn.execute(sql).fetchone()

    def run(self) -> None:
        last, m0 = {}, _machine()
        self.machine = (0, 0)  # (total, idle) jiffies over the window
        while True:
            groups = {"clients": set(self.client_pids)}
            sample = {}
            if self.conn is not None:
                rows = self.conn.execute(
                    "SELECT pid, datname = current_database(), backend_type, wait_event_type, state, wait_event "
                    "FROM pg_stat_activity WHERE pid <> pg_backend_pid()").fetchall()
                mine = [r for r in rows if r[1]]
                for r in mine:  # which lock: "Lock:extend" (a table growing), "Lock:transactionid" (a row)...
                    if r[3] in ("Lock", "LWLock"):
                        self.waits[f"{r[3]}:{r[5]}"] = self.waits.get(f"{r[3]}:{r[5]}", 0) + 1
                groups["db backends"] = {r[0] for r in mine}
                groups["db server"] = {r[0] for r in rows if r[2] != "client backend"}
                sample = {"connections": len(mine) + 1, "all connections": len(rows) + 1,
                          "lock waits": sum(r[3] == "Lock" for r in mine),
                          "lwlock waits": sum(r[3] == "LWLock" for r in mine),
                          "active": sum(r[4] == "active" for r in mine)}
            for group, pids in groups.items():
                for pid in pids:
                    ticks = _ticks(pid)
                    if ticks is not None:
                        if pid in last:
                            self.cpu[group] += ticks - last[pid]
                        last[pid] = ticks
            m1 = _machine()
            self.machine = (self.machine[0] + m1[0] - m0[0], self.machine[1] + m1[1] - m0[1])
            m0 = m1
            self.samples.append(sample)
            if self.halt.wait(1.0):
                break

    def stop(self) -> dict:
        self.halt.set()
        self.join()
        out = {k: v / self.HZ for k, v in self.cpu.items()}  # CPU seconds
        out["machine busy"] = 1 - self.machine[1] / max(1, self.machine[0])
        for key in ("connections", "all connections", "lock waits", "lwlock waits", "active"):
            values = [s[key] for s in self.samples if key in s]
            if values:
                out[key + " mean"], out[key + " max"] = sum(values) / len(values), max(values)
        if self.conn is not None:
            self.conn.close()
        top = sorted(self.waits.items(), key=lambda kv: -kv[1])[:3]
        out["top waits"] = ", ".join(f"{k} {v / max(1, len(self.samples)):.0f}" for k, v in top)
        return out


def pg_counters(url: str) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        size, commits, rollbacks, lsn, maxc = c.execute(
            "SELECT pg_database_size(current_database()), xact_commit, xact_rollback, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, current_setting('max_connections')::int "
            "FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return {"size": size, "xacts": commits + rollbacks, "wal": lsn, "max_connections": maxc}


def sqlite_size(url: str) -> int:
    path = url[len("sqlite:///"):]
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


# --- the run ------------------------------------------------------------------------------------
def spec_for(rng: random.Random) -> dict:
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
    return make_spec(prompt, "fleet-sim", width=64, height=64, iterations=1).to_dict()


def fill_history(store, cfg: Config, count: int, rng: random.Random) -> None:
    """Finished jobs for the gallery to page through (thumbnails of real size, small GIF/PNG)."""
    thumb = rng.randbytes(cfg.thumb_bytes)
    for first in range(0, count, 200):
        with store.transaction():
            for _ in range(min(200, count - first)):
                store.submit(spec_for(rng), batch_key="history", total=1)
                job = store.claim("history", 60)
                store.complete(job.lease, Result(job.id, b"G", b"P", thumb, {}, 64, 64, 0, 0.0))


def submitter(url: str, steps: int, rate: float, window, limit: int, ids: list, stop: threading.Event,
              errors: list) -> None:
    store, rng = open_store(url), random.Random(1)
    try:
        i = 0
        while time.time() < window[1] and len(ids) < limit and not stop.is_set():
            due = window[0] + i / rate
            if due > time.time() and stop.wait(due - time.time()):
                break
            try:
                ids.append(store.submit(spec_for(rng), batch_key="fleet", total=steps, max_attempts=100))
            except StoreError as e:
                errors.append(f"submit: {e}")
            i += 1
    finally:
        store.close()


def browser(url: str, window, interval: float, pages: list, stop: threading.Event, seed: int) -> None:
    store, rng = open_store(url), random.Random(seed)
    try:
        while time.time() < window[1] and not stop.is_set():
            t = time.monotonic()
            search = rng.choice(WORDS) if rng.random() < 0.2 else None
            store.gallery(search=search, limit=24, offset=24 * rng.randrange(5))
            if time.time() >= window[0]:
                pages.append(time.monotonic() - t)
            stop.wait(max(0.0, interval - (time.monotonic() - t)))
    finally:
        store.close()


def collect(q, procs, count: int, exits: bool = False, timeout: float = 300.0) -> list:
    """count messages from the worker processes; fails at once when one of them died silently."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count:
        try:
            got.append(q.get(timeout=1.0))
        except queue.Empty:
            dead = [p for p in procs if not p.is_alive() and (p.exitcode != 0 or not exits)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"executor process exited (code {dead[0].exitcode}) before reporting" if dead
                                   else f"only {len(got)} of {count} reports within {timeout:g} s") from None
    return got


def run(cfg: Config, n: int, *, processes: int, seconds: float, submit_rate: float | None, browsers: int,
        browse_interval: float, history: int, max_jobs: int, drain_seconds: float | None, backlog: int = 0) -> dict:
    """One simulation; returns its figures, with "problems" listing what broke "every job done exactly
    once" (empty when nothing did). A run whose executors could not all connect stops there."""
    pg = cfg.url.startswith("postgres")
    rng = random.Random(cfg.seed)
    store = open_store(cfg.url)
    fill_history(store, cfg, history, rng)
    ctx = mp.get_context("spawn")
    ready, out, start, stop = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    procs_n = max(1, min(processes, n))
    counts = [n // procs_n + (i < n % procs_n) for i in range(procs_n)]
    window = ctx.Array("d", 2)
    procs = [ctx.Process(target=worker_process, args=(cfg, i, c, ready, start, window, stop, out), daemon=True)
             for i, c in enumerate(counts)]
    fig: dict = {"backend": "postgresql" if pg else "sqlite", "N": n, "scale": cfg.time_scale}
    try:
        for p in procs:
            p.start()
        opened = time.monotonic()
        failures = [e for e in collect(ready, procs, n) if e]
        fig["connect seconds"] = time.monotonic() - opened
        fig["failed to start"] = len(failures)
        fig["start error"] = failures[0] if failures else ""
        if failures:  # this N does not fit (too many connections, say): say so instead of measuring less
            stop.set()
            start.set()
            collect(out, procs, len(procs), exits=True)
            store.close()
            return fig
        rate = submit_rate or 0.9 * (n - len(failures)) / cfg.job_seconds
        fig["submit rate"] = rate
        ids = []
        with store.transaction():  # a fleet in steady state: every executor finds a job at once
            for _ in range(min(backlog, max_jobs)):
                ids.append(store.submit(spec_for(rng), batch_key="fleet", total=cfg.steps, max_attempts=100))
        before = pg_counters(cfg.url) if pg else {"size": sqlite_size(cfg.url)}
        monitor = Monitor(cfg.url if pg else None, [os.getpid()] + [p.pid for p in procs])
        t0 = time.time() + 0.5
        window[0], window[1] = t0, t0 + seconds
        w = (t0, t0 + seconds)
        start.set()
        vstop, errors, pages = threading.Event(), [], []
        visitors = [threading.Thread(target=submitter, daemon=True,
                                     args=(cfg.url, cfg.steps, rate, w, max_jobs, ids, vstop, errors))]
        visitors += [threading.Thread(target=browser, args=(cfg.url, w, browse_interval, pages, vstop, i), daemon=True)
                     for i in range(browsers)]
        for t in visitors:
            t.start()
        time.sleep(max(0.0, t0 - time.time()))  # the window opens: start measuring
        monitor.start()
        time.sleep(max(0.0, w[1] - time.time()))
        cpu = monitor.stop()
        after = pg_counters(cfg.url) if pg else {"size": sqlite_size(cfg.url)}
        for t in visitors:
            t.join()
        # Drain: everything submitted must end done.
        drain = drain_seconds or (3 * cfg.job_seconds + 3 * cfg.s(cfg.lease) + 30)
        deadline, c = time.monotonic() + drain, {}
        while time.monotonic() < deadline:
            c = store.counts()
            if c["done"] - history + c["failed"] + c["cancelled"] >= len(ids):
                break
            time.sleep(0.5)
        stop.set()
        stats = Stats()
        for part in collect(out, procs, len(procs), exits=True):
            stats.merge(part)
    finally:
        stop.set()
        for p in procs:
            if p.pid is not None:
                p.join(timeout=30)
                if p.is_alive():
                    p.terminate()
                    p.join()
    c = store.counts()
    total_done = store.gallery(status="done", limit=1)[1]
    store.close()

    problems = exactly_once(ids, stats.done, c, total_done, history)
    if errors:
        problems.append(f"{len(errors)} submits failed: {errors[0]}")
    fig.update(problems=problems, submitted=len(ids), completed=len(stats.done), cpu=cpu, before=before, after=after,
               seconds=seconds, stats=stats, gallery=pages)
    return fig


def exactly_once(submitted: list, done: list, counts: dict, gallery_total: int, history: int) -> list[str]:
    """What breaks "every submitted job done exactly once": `done` lists the job ids whose complete()
    returned True, from every executor; counts and gallery_total are the store's own view."""
    problems, seen, twice = [], set(), set()
    for job_id in done:
        (twice if job_id in seen else seen).add(job_id)
    missing, stray = sorted(set(submitted) - seen), sorted(seen - set(submitted))
    if twice:
        problems.append(f"{len(twice)} jobs completed twice (e.g. {sorted(twice)[:5]})")
    if missing:
        problems.append(f"{len(missing)} submitted jobs not done (e.g. {missing[:5]}); store counts {counts}")
    if stray:
        problems.append(f"{len(stray)} jobs done that were never submitted (e.g. {stray[:5]})")
    want = len(submitted) + history
    if counts["done"] != want or gallery_total != want or counts["queued"] or counts["running"]:
        problems.append(f"store counts {counts} (gallery total {gallery_total}) for {len(submitted)} submitted "
                        f"+ {history} history")
    return problems


# --- the report ---------------------------------------------------------------------------------
def pct(values: list, q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def ms(v) -> str:
    return "-" if v is None else f"{v * 1000:.0f}" if v >= 0.1 else f"{v * 1000:.1f}"


def figures(f: dict, cfg: Config) -> dict:
    """The per-run figures of the report (also what the tests check)."""
    st, sec = f["stats"], f["seconds"]
    cnt = lambda op: st.counts.get(op, 0)  # noqa: E731
    frames, completes = cnt("frame"), cnt("complete")
    writes = sum(cnt(op) for op in WRITES)
    out = {
        "claims/s": cnt("claim") and (cnt("claim") - cnt("empty claim")) / sec,
        "pickup p50 ms": ms(pct(st.pickups, 0.5)), "pickup p99 ms": ms(pct(st.pickups, 0.99)),
        "heartbeats/s": cnt("heartbeat") / sec, "progress/s": cnt("progress") / sec, "frames/s": frames / sec,
        "frame MB/s": frames * cfg.frame_bytes / sec / 1e6, "results/s": completes / sec,
        "result MB/s": completes * cfg.result_bytes / sec / 1e6,
        "store writes/s": writes / sec,
        "empty claims/s": cnt("empty claim") / sec, "sweeps/s": cnt("sweep") / sec, "seen/s": cnt("seen") / sec,
        "growth GB/h": (f["after"]["size"] - f["before"]["size"]) / sec * 3600 / 1e9,
        "gallery p50 ms": ms(pct(f["gallery"], 0.5)), "gallery p95 ms": ms(pct(f["gallery"], 0.95)),
        "gallery pages": len(f["gallery"]),
        "job slowdown": (sum(st.durations) / len(st.durations) / cfg.job_seconds) if st.durations else None,
        "errors": sum(v for k, v in st.counts.items() if "error" in k),
        "kills": cnt("killed") + cnt("killed@drain"), "leases lost": cnt("lease lost") + cnt("lease lost@drain"),
        "cpu clients": f["cpu"]["clients"] / sec, "cpu db": (f["cpu"]["db backends"] + f["cpu"]["db server"]) / sec,
        "machine busy": f["cpu"]["machine busy"],
    }
    for op in ("claim", "progress", "frame", "heartbeat", "complete", "sweep"):
        out[f"{op} p99 ms"] = ms(pct(st.lat.get(op, []), 0.99))
    if f["backend"] == "postgresql":
        out["xacts/s"] = (f["after"]["xacts"] - f["before"]["xacts"]) / sec
        out["WAL MB/s"] = (f["after"]["wal"] - f["before"]["wal"]) / sec / 1e6
        out["connections"] = f["cpu"].get("connections max")
        out["max_connections"] = f["before"]["max_connections"]
        out["lock waits"] = f"{f['cpu'].get('lock waits mean', 0):.1f}/{f['cpu'].get('lock waits max', 0)}"
        out["top waits"] = f["cpu"].get("top waits") or "-"
    out["first to saturate"] = verdict(f, out)
    return out


def verdict(f: dict, o: dict) -> str:
    """The first resource to run out, from what was measured (in this order of evidence)."""
    if f["failed to start"]:
        reason = f["start error"].split(": ")[-1][:90]
        return f"connections: {f['failed to start']} of {f['N']} executors could not connect: {reason}"
    busy, ours = o["machine busy"], o["cpu db"] + o["cpu clients"]
    slow = (o["job slowdown"] or 1) > 1.2
    machine = f"machine {busy:.0%} busy, ours {ours:.2f} of {os.cpu_count()} cores"
    if f["backend"] == "postgresql" and f["cpu"].get("lock waits mean", 0) >= 1:
        return f"row/table locks (backends waiting on Lock; {machine})"
    if f["backend"] == "sqlite" and slow:
        return f"the single SQLite write lock: writes queue, jobs {o['job slowdown']:.1f}x slower ({machine})"
    if busy > 0.85 and ours >= 0.5 * busy * os.cpu_count():
        who = "the database server" if o["cpu db"] > o["cpu clients"] else "the clients (executors' Python)"
        return f"CPU, most of it {who} ({machine}; jobs {o['job slowdown'] or 1:.1f}x slower)"
    if slow:
        return f"database latency: jobs {o['job slowdown']:.1f}x slower ({machine}, mostly other work)"
    return f"nothing yet ({machine})"


COLUMNS = ["backend", "N", "equiv. executors", "claims/s", "pickup p50 ms", "pickup p99 ms", "heartbeats/s",
           "progress/s", "frames/s", "frame MB/s", "result MB/s", "store writes/s", "growth GB/h", "gallery p95 ms",
           "job slowdown", "first to saturate"]
DETAIL = ["backend", "N", "submitted", "empty claims/s", "sweeps/s", "seen/s", "gallery p50 ms", "gallery pages",
          "claim p99 ms", "progress p99 ms",
          "frame p99 ms", "heartbeat p99 ms", "complete p99 ms", "sweep p99 ms", "errors", "kills", "leases lost",
          "cpu clients", "cpu db", "machine busy", "connect seconds", "xacts/s", "WAL MB/s", "connections",
          "max_connections", "lock waits", "top waits"]


def cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v).replace("|", "/")


def report(runs: list[dict], cfg: Config, header: str) -> str:
    rows, detail, stopped = [], [], []
    for f in runs:
        if f["failed to start"]:
            stopped.append(f"| {f['backend']} | {f['N']} | {f['N'] * cfg.time_scale:g} | "
                           + " | ".join("-" for _ in COLUMNS[3:-1]) + f" | {verdict(f, {})} |")
            continue
        o = {**figures(f, cfg), "backend": f["backend"], "N": f["N"], "submitted": f["submitted"],
             "connect seconds": f["connect seconds"],
             "equiv. executors": f["N"] * cfg.time_scale}
        f["figures"] = o
        rows.append("| " + " | ".join(cell(o.get(k)) for k in COLUMNS) + " |")
        detail.append("| " + " | ".join(cell(o.get(k)) for k in DETAIL) + " |")
    per = []
    for f in (f for f in runs if "figures" in f):
        o, n = f["figures"], f["N"] * cfg.time_scale
        per.append(f"| {f['backend']} | {f['N']} | {o['store writes/s'] / n:.2f} | "
                   f"{(o['frame MB/s'] + o['result MB/s']) * 1e3 / n:.1f} | "
                   + (f"{o['xacts/s'] / n:.2f}" if "xacts/s" in o else "-") + " |")
    sep = lambda cols: "| " + " | ".join("---" for _ in cols) + " |"  # noqa: E731
    return "\n".join([
        header, "",
        "| " + " | ".join(COLUMNS) + " |", sep(COLUMNS), *rows, *stopped, "",
        "Details (p99 latencies of the store calls in ms; CPU in cores; lock waits mean/max backends; top "
        "waits: wait events of this database's backends, mean backends per sample):", "",
        "| " + " | ".join(DETAIL) + " |", sep(DETAIL), *detail, "",
        "Per real executor (measured rates / (N x time scale)):", "",
        "| backend | N | store writes/s | KB/s written (frames + results) | PostgreSQL transactions/s |",
        "| --- | --- | --- | --- | --- |", *per, ""])


@contextmanager
def database(backend: str, admin_url: str):
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="t2i-fleet-")
        try:
            yield f"sqlite:///{folder}/queue.db"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        from t2i.store.postgres import temporary_database

        with temporary_database(admin_url, f"t2i_fleet_{os.getpid()}_") as url:
            yield url


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executors", type=int, nargs="+", default=[10, 100, 1000], help="simulated executor counts")
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the measured load phase")
    ap.add_argument("--processes", type=int, default=4, help="processes the executor threads are spread over")
    ap.add_argument("--time-scale", type=float, default=1.0, help="divide every interval by this (see above)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--step-ms", type=float, default=100.0, help="real milliseconds per step (a GPU)")
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--frame-kb", type=float, default=100.0)
    ap.add_argument("--png-kb", type=float, default=110.0)
    ap.add_argument("--thumb-kb", type=float, default=6.0)
    ap.add_argument("--gif-frame-kb", type=float, default=40.0, help="GIF bytes per frame of the result")
    ap.add_argument("--lease", type=float, default=60.0, help="real lease seconds (heartbeat every third)")
    ap.add_argument("--kill-rate", type=float, default=0.02, help="fraction of jobs whose executor dies mid-job")
    ap.add_argument("--submit-rate", type=float, default=None, help="jobs/s (default: 90%% of the fleet's capacity)")
    ap.add_argument("--max-jobs", type=int, default=100_000, help="bound on the jobs submitted")
    ap.add_argument("--browsers", type=int, default=4)
    ap.add_argument("--browse-interval", type=float, default=0.5)
    ap.add_argument("--history", type=int, default=1000, help="finished jobs in the gallery before the run")
    ap.add_argument("--backlog", type=int, default=None,
                    help="jobs queued before the window (default N: every executor busy from the start, its first "
                         "job taken up mid-way, as in a fleet that was already running)")
    ap.add_argument("--drain-seconds", type=float, default=None)
    ap.add_argument("--claim-many", action="store_true",
                    help="claim_many(n=1) and heartbeat_all, as the executor (the store must have them)")
    ap.add_argument("--pg-admin-url", default=PG_ADMIN, help="may CREATE/DROP DATABASE (default: %(default)s)")
    ap.add_argument("--report", type=Path, default=None, help="write the Markdown report here too")
    args = ap.parse_args(argv)
    for name in ("seconds", "time_scale", "step_ms", "lease", "browse_interval"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be above 0")
    if not 0 <= args.kill_rate < 1 or args.steps < 1 or args.save_every < 1 or min(args.executors) < 1:
        ap.error("--kill-rate in [0, 1), --steps, --save-every and --executors at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (processes, databases) on kill too
    kb = lambda v: int(v * 1000)  # noqa: E731
    base = dict(steps=args.steps, step_s=args.step_ms / 1000, save_every=args.save_every, frame_bytes=kb(args.frame_kb),
                png_bytes=kb(args.png_kb), thumb_bytes=kb(args.thumb_kb), gif_frame_bytes=kb(args.gif_frame_kb),
                lease=args.lease, time_scale=args.time_scale, kill_rate=args.kill_rate, claim_many=args.claim_many)
    command = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", shlex.join(["python", *sys.argv]))
    cfg0 = Config(url="", **base)
    header = (f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load before: {os.getloadavg()[0]:.2f}\n"
              f"Command: `{command}`\n"
              f"Job: {args.steps} steps x {args.step_ms:g} ms / time scale {args.time_scale:g} = "
              f"{cfg0.job_seconds:.1f} s; a frame every {args.save_every} steps ({args.frame_kb:g} KB); result "
              f"{cfg0.result_bytes / 1e6:.2f} MB; lease {args.lease:g} s / scale; kill rate {args.kill_rate:g}.")
    print(header, flush=True)
    runs, failed = [], False
    for backend in args.backends:
        for n in args.executors:
            with database(backend, args.pg_admin_url) as url:
                f = run(Config(url=url, **base), n, processes=args.processes, seconds=args.seconds,
                        submit_rate=args.submit_rate, browsers=args.browsers, browse_interval=args.browse_interval,
                        history=args.history, max_jobs=args.max_jobs, drain_seconds=args.drain_seconds,
                        backlog=n if args.backlog is None else args.backlog)
            runs.append(f)
            line = report([f], cfg0, "").splitlines()[4]
            print(line, flush=True)
            for p in f.get("problems", []):
                print(f"EXACTLY-ONCE BROKEN ({backend}, N={n}): {p}", file=sys.stderr, flush=True)
                failed = True
    text = report(runs, cfg0, header) + f"\nLoad after: {os.getloadavg()[0]:.2f}\n"
    print(text)
    if args.report:
        args.report.write_text(text)
        raw = [{**{k: v for k, v in f.items() if k not in ("stats", "gallery")},
                "counts": f["stats"].counts if "stats" in f else {}} for f in runs]
        args.report.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
