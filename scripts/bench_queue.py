"""Load benchmark of the job queue itself (no models): claims/s and idle pickup latency.

For each backend (SQLite: a fresh temp file; PostgreSQL: a fresh throwaway database created and
dropped from --pg-admin-url) and each N in --executors, N executor *processes* (multiprocessing,
"spawn"; each opens its own store) run no-op jobs:

1. throughput: J jobs (--jobs) are submitted first; on a start signal the N workers loop
   claim_many(worker, 30, B) -> complete(lease, tiny Result) for each job taken, until a claim
   returns nothing; B is each --claim-batch (B = 1 calls claim() itself, so this script also runs
   against a store from before claim_many, for a before/after comparison).
   claims/s = J / (last completion - start signal), so a job's completion is counted in its claim.
   Every job must be done exactly once (counts()['done'] == J, no job id claimed twice, and
   none left queued or running), else the script fails. With --claims-only the workers claim and
   never complete (the claim path alone: J claims, each job claimed exactly once, all left running).
2. pickup latency: the N workers idle-poll like t2i/service/executor.py (sweep, claim; when nothing is
   queued, worker_seen and wait_for_work(poll), poll doubling from 0.05 s up to 0.5 s, reset after
   a claim). The main process submits K jobs (--pickups) one at a time, each after the previous one
   left 'queued' (polled every 1 ms); latency = started_at - created_at, both on the database clock
   (SQLite's clock has 1 ms resolution). PostgreSQL wakes idle workers with NOTIFY; SQLite polls.
   Measured once per backend and N (an idle worker takes one job at a time, whatever B).
3. heartbeats (--beats B, with --leases L): one executor holding L jobs beats B times, one
   heartbeat() per lease (what the executor did before heartbeat_all) and one heartbeat_all() for
   all of them; ms per beat, every lease must stay alive. Against a store without heartbeat_all
   only the first is measured.

Run:  PYTHONPATH=. .venv/bin/python scripts/bench_queue.py [--jobs 2000] [--pickups 50] [--no-pg] ...
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `t2i`

from t2i.spec import make_spec  # noqa: E402
from t2i.store import Result, open_store  # noqa: E402

_SPEC = make_spec("a queue benchmark", "bench-noop", width=64, height=64, iterations=1)
SPEC, KEYS = _SPEC.to_dict(), dict(batch_key=_SPEC.batch_key, total=_SPEC.total_steps)
PG_ADMIN = "postgresql://t2i_test:t2i_test@127.0.0.1:5432/postgres"
LEASE = 30.0


def tiny_result(job_id: int) -> Result:
    return Result(job_id=job_id, gif=b"GIF", png=b"PNG", thumbnail=b"T", parameters={}, width=1, height=1,
                  seed=0, created_at=0.0)


def worker(body, url, name, ready, event, out, *extra):
    """A process: open a store, say ready, run body(store, name, event, *extra); report (payload, error)."""
    payload, error, store = None, None, None
    try:
        store = open_store(url)
        ready.put(name)
        payload = body(store, name, event, *extra)
    except BaseException as e:  # reported to the main process, which fails the run
        error = f"{name}: {type(e).__name__}: {e}"
    finally:
        ready.put(name) if store is None else store.close()  # never leave the main process waiting
    out.put((payload, error))


def drain(store, name, start, batch, complete):
    """Throughput: claim `batch` jobs at a time -> complete each (unless not `complete`), until the
    queue is empty; returns (job ids, last completion)."""
    ids, last = [], None
    if not start.wait(timeout=300):
        raise RuntimeError("no start signal")
    # A batch of 1 is claim() itself (what a store without claim_many offers, for a before/after run).
    while jobs := (store.claim_many(name, LEASE, batch) if batch > 1 else [j for j in [store.claim(name, LEASE)] if j]):
        for job in jobs:
            if complete and not store.complete(job.lease, tiny_result(job.id)):
                raise RuntimeError(f"complete({job.id}) rejected")
            ids.append(job.id)
        last = time.monotonic()
    return ids, last


def idle_poll(store, name, stop):
    """Pickup: the loop of Executor.run (sweep, claim, else worker_seen + wait) with a no-op job."""
    delay = 0.05
    while not stop.is_set() and mp.parent_process().is_alive():
        store.sweep()
        job = store.claim(name, LEASE)
        if job is None:
            store.worker_seen(name, host="bench", device="none", job_id=None)
            store.wait_for_work(delay)
            delay = min(delay * 2, 0.5)
            continue
        delay = 0.05
        if not store.complete(job.lease, tiny_result(job.id)):
            raise RuntimeError(f"complete({job.id}) rejected")


@contextmanager
def workers(ctx, body, url, n, event, *extra):
    """Start n worker processes; wait until each has opened its store; always reap them."""
    ready, out = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(body, url, f"w{i}", ready, event, out, *extra), daemon=True)
             for i in range(n)]
    clean = False
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=120)
        yield procs, out
        clean = True
    finally:
        event.set()
        for p in (p for p in procs if p.pid is not None):  # the started ones
            p.join(timeout=10 if clean else 0)
            if p.is_alive():
                p.terminate()
                p.join()


def results(out, procs, n, timeout=600.0):
    """The n workers' (payload, error) reports; raises on the first error or a silent exit."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n:
        try:
            got.append(out.get(timeout=1.0))
        except queue.Empty:
            if time.monotonic() > deadline or (not any(p.is_alive() for p in procs) and out.empty()):
                raise RuntimeError(f"only {len(got)} of {n} workers reported") from None
        if got[-1:] and got[-1][1]:
            raise RuntimeError(f"worker failed: {got[-1][1]}")
    return got


def throughput(ctx, url, n, jobs, batch, complete=True):
    """claims/s of n workers claiming `batch` jobs at a time; fails unless every job is done (or, not
    `complete`, claimed) exactly once."""
    store = open_store(url)
    try:
        with store.transaction():
            for _ in range(jobs):
                store.submit(SPEC, **KEYS)
        start = ctx.Event()
        with workers(ctx, drain, url, n, start, batch, complete) as (procs, out):
            t0 = time.monotonic()
            start.set()
            reports = [payload for payload, _ in results(out, procs, n)]
        claimed = [i for ids, _ in reports for i in ids]
        counts = store.counts()
        ended, held = ("done", "running") if complete else ("running", "done")
        if counts[ended] != jobs or len(claimed) != jobs or len(set(claimed)) != jobs or \
                counts["queued"] or counts[held]:
            raise RuntimeError(f"{counts['done']} done, {counts['queued']} queued, {counts['running']} running, "
                               f"{len(claimed)} claims, {len(set(claimed))} distinct; want {jobs} {ended} once each")
        return jobs / (max(last for _, last in reports if last) - t0)
    finally:
        store.close()


def pickup(ctx, url, n, pickups):
    """Idle pickup latency p50, p95 (ms) of n polling workers, one job submitted at a time."""
    store = open_store(url)
    try:
        latencies = []
        stop = ctx.Event()
        with workers(ctx, idle_poll, url, n, stop) as (procs, out):
            time.sleep(1.0)  # let every worker reach its longest idle wait
            for _ in range(pickups):
                job_id, deadline = store.submit(SPEC, **KEYS), time.monotonic() + 30
                while (job := store.get(job_id)).status == "queued":
                    if time.monotonic() > deadline or not all(p.is_alive() for p in procs):
                        raise RuntimeError(f"job {job_id} not claimed within 30 s, or a worker exited")
                    time.sleep(0.001)
                latencies.append((job.started_at - job.created_at) * 1000)
            stop.set()
            results(out, procs, n, timeout=30)
        latencies.sort()
        pct = lambda q: latencies[max(0, math.ceil(q * len(latencies)) - 1)]  # noqa: E731 (nearest rank)
        return pct(0.5), pct(0.95)
    finally:
        store.close()


def beat_cost(url, leases, beats):
    """ms per beat of one executor holding `leases` jobs: a heartbeat() per lease, then one
    heartbeat_all() (None when the store has none); fails if a lease is not kept alive."""
    store = open_store(url)
    try:
        for _ in range(leases):
            store.submit(SPEC, **KEYS)
        held = [store.claim("beater", LEASE).lease for _ in range(leases)]
        t0 = time.perf_counter()
        for _ in range(beats):
            if not all(store.heartbeat(lease, LEASE).alive for lease in held):
                raise RuntimeError("a heartbeat lost a lease")
        each = (time.perf_counter() - t0) * 1000 / beats
        if not hasattr(store, "heartbeat_all"):
            return each, None
        t0 = time.perf_counter()
        for _ in range(beats):
            if not all(b.alive for b in store.heartbeat_all("beater", held, LEASE).values()):
                raise RuntimeError("heartbeat_all lost a lease")
        return each, (time.perf_counter() - t0) * 1000 / beats
    finally:
        store.close()


@contextmanager
def sqlite_db():
    folder = tempfile.mkdtemp(prefix="t2i-bench-")
    try:
        yield f"sqlite:///{folder}/queue.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pg_db(admin_url):
    from t2i.store.postgres import temporary_database

    return temporary_database(admin_url, f"t2i_bench_{os.getpid()}_")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000, help="jobs in the throughput run (default 2000)")
    ap.add_argument("--pickups", type=int, default=50, help="jobs in the pickup-latency run (default 50)")
    ap.add_argument("--executors", type=int, nargs="+", default=[1, 4, 16], help="executor process counts")
    ap.add_argument("--claim-batch", type=int, nargs="+", default=[1], metavar="N",
                    help="jobs taken per claim (claim_many), one throughput run each (default 1)")
    ap.add_argument("--claims-only", action="store_true", help="claim without completing (the claim path alone)")
    ap.add_argument("--beats", type=int, default=0, help="heartbeat rounds to time (default 0: none)")
    ap.add_argument("--leases", type=int, default=16, help="jobs one executor holds while beating (default 16)")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--pg-admin-url", default=PG_ADMIN, help="may CREATE/DROP DATABASE (default: %(default)s)")
    args = ap.parse_args(argv)
    for flag, values in (("--jobs", [args.jobs]), ("--executors", args.executors), ("--claim-batch", args.claim_batch),
                         ("--leases", [args.leases])):
        if min(values) < 1:
            ap.error(f"{flag} {min(values)}: must be at least 1")
    for flag, value in (("--pickups", args.pickups), ("--beats", args.beats)):
        if value < 0:
            ap.error(f"{flag} {value}: must be 0 or more")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (workers, databases) on kill too
    ctx = mp.get_context("spawn")
    command = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", shlex.join(["python", *sys.argv]))
    print(f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M')}\nCommand: `{command}`\n")
    rate = "claims/s (claims only)" if args.claims_only else "claims/s"
    print(f"| backend | executors | claim batch | {rate} | pickup p50 ms | pickup p95 ms |\n"
          "| --- | --- | --- | --- | --- | --- |")
    backends = ([] if args.no_sqlite else [("sqlite", sqlite_db)]) + \
        ([] if args.no_pg else [("postgresql", lambda: pg_db(args.pg_admin_url))])
    for backend, database in backends:
        for n in args.executors:
            for i, batch in enumerate(args.claim_batch):
                with database() as url:
                    rate = throughput(ctx, url, n, args.jobs, batch, complete=not args.claims_only)
                    # Pickup does not depend on the claim batch (an idle worker takes one job): once per N.
                    p50, p95 = pickup(ctx, url, n, args.pickups) if i == 0 and args.pickups else (None, None)
                shown = " | ".join("" if v is None else f"{v:.1f}" for v in (p50, p95))
                print(f"| {backend} | {n} | {batch} | {rate:.0f} | {shown} |", flush=True)
    if args.beats:
        print("\n| backend | leases | a heartbeat() per lease, ms/beat | one heartbeat_all(), ms/beat |\n"
              "| --- | --- | --- | --- |")
        for backend, database in backends:
            with database() as url:
                each, together = beat_cost(url, args.leases, args.beats)
            shown = "" if together is None else f"{together:.2f}"
            print(f"| {backend} | {args.leases} | {each:.2f} | {shown} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
