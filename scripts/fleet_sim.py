"""The fleet simulation's executors and visitors (scripts/simulate_fleet.py runs them): N executors without
models as threads in a few processes, a submitter, gallery readers, and one run's measured window and
drain. What each part does is in simulate_fleet.py's docstring."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `t2i`

from fleet_monitor import Monitor, folder_size, pg_counters, sqlite_size  # noqa: E402
from fleet_report import exactly_once  # noqa: E402
from t2i.spec import make_spec  # noqa: E402
from t2i.store import Result, StoreError, open_store  # noqa: E402

PROGRESS_EVERY, SEEN_EVERY, LISTENING_POLL = 0.5, 5.0, 30.0  # t2i/service/executor.py's (real seconds)
WORDS = "red green blue small large circle square triangle star shape on the left right top bottom".split()
# Connections opened at once per process: a fleet starts over minutes, not in one second (2,000
# simultaneous connects time out on a 2-core server: the postmaster forks one backend per connection).
OPENING = 8


@dataclass
class Config:
    url: str
    direct: str = ""             # the database itself, for monitoring, when url goes through PgBouncer
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
                # as the executor: poll rarely while the host's relay passes wake-ups on
                reliable = self.call("reliable", store.wakeups_reliable)
                delay = min(delay * 2, cfg.s(max(cfg.max_poll, LISTENING_POLL) if reliable else cfg.max_poll))
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


def counters(cfg: Config) -> dict:
    """Size (and on PostgreSQL transactions, WAL, max_connections) of the database, and the blob folder's bytes."""
    found = pg_counters(cfg.direct or cfg.url) if cfg.url.startswith("postgres") else {"size": sqlite_size(cfg.url)}
    return {**found, "blobs": folder_size(os.environ.get("T2I_BLOBS"))}


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
        before = counters(cfg)
        backlog_jobs = len(ids)
        monitor = Monitor((cfg.direct or cfg.url) if pg else None, [os.getpid()] + [p.pid for p in procs])
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
        after = counters(cfg)
        fig["window jobs"] = len(ids) - backlog_jobs
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
