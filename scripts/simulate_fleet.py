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

Through PgBouncer (--pgbouncer): a local one in transaction mode (scripts/local_pgbouncer.py) in front of
the --pg-admin-url server, --pool-size server connections; executors and visitors connect through it,
the host's one LISTEN (t2i/store/waker.py) and the monitoring go direct. --blobs: frames, results and
uploads in a filesystem BlobStore (T2I_BLOBS, a temporary folder), its growth reported beside the
database's.

The parts: fleet_sim.py (executors, visitors, one run), fleet_monitor.py (/proc and PostgreSQL's
catalog), fleet_report.py (exactly-once, figures, verdict, tables); this file parses the command line.

Run:  PYTHONPATH=. .venv/bin/python scripts/simulate_fleet.py --executors 10 100 --seconds 60 --report /tmp/fleet.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))         # the other parts, when imported from the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `t2i`

from fleet_report import exactly_once, report  # noqa: E402,F401  (exactly_once: the tests check it here)
from fleet_sim import Config, run  # noqa: E402
from local_pgbouncer import LocalPgBouncer  # noqa: E402

PG_ADMIN = "postgresql://t2i_test:t2i_test@127.0.0.1:5432/postgres"


@contextmanager
def database(backend: str, admin_url: str, bouncer: LocalPgBouncer | None):
    """(the URL clients use, the database's own URL) of a throwaway database."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="t2i-fleet-")
        try:
            yield f"sqlite:///{folder}/queue.db", ""
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        from t2i.store.postgres import temporary_database

        with temporary_database(admin_url, f"t2i_fleet_{os.getpid()}_") as url:
            if bouncer is None:
                yield url, url
                return
            os.environ["T2I_LISTEN_DB"] = url  # LISTEN goes direct, once per host; the spawned processes inherit it
            try:
                yield bouncer.url(url), url
            finally:
                bouncer.stop()  # its server connections would hold the database open (DROP waits 5 s a try)
                bouncer.start()


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
    ap.add_argument("--pgbouncer", action="store_true", help="through a local PgBouncer in transaction mode")
    ap.add_argument("--pool-size", type=int, default=20, help="PgBouncer's server connections (default %(default)s)")
    ap.add_argument("--blobs", action="store_true", help="frames, results and uploads as files (T2I_BLOBS)")
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
              f"{cfg0.result_bytes / 1e6:.2f} MB; lease {args.lease:g} s / scale; kill rate {args.kill_rate:g}"
              + (f"; through PgBouncer (transaction mode, {args.pool_size} server connections)" if args.pgbouncer else "")
              + ("; frames, results and uploads in a filesystem BlobStore" if args.blobs else "") + ".")
    print(header, flush=True)
    runs, failed = [], False
    bouncer = blob_root = None
    if args.pgbouncer:
        bouncer = LocalPgBouncer(args.pg_admin_url, Path(tempfile.mkdtemp(prefix="t2i-pgbouncer-")),
                                 pool_size=args.pool_size).start()
    if args.blobs:
        blob_root = tempfile.mkdtemp(prefix="t2i-fleet-blobs-")
    try:
        failed = _runs(args, base, cfg0, bouncer, blob_root, runs)
    finally:
        if bouncer is not None:
            bouncer.stop()
        if blob_root:
            shutil.rmtree(blob_root, ignore_errors=True)
    text = report(runs, cfg0, header) + f"\nLoad after: {os.getloadavg()[0]:.2f}\n"
    print(text)
    if args.report:
        args.report.write_text(text)
        raw = [{**{k: v for k, v in f.items() if k not in ("stats", "gallery")},
                "counts": f["stats"].counts if "stats" in f else {}} for f in runs]
        args.report.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    return 1 if failed else 0


def _runs(args, base: dict, cfg0: Config, bouncer, blob_root, runs: list) -> bool:
    failed = False
    for backend in args.backends:
        for n in args.executors:
            if blob_root:
                os.environ["T2I_BLOBS"] = os.path.join(blob_root, f"{backend}-{n}")
            with database(backend, args.pg_admin_url, bouncer) as (url, direct):
                f = run(Config(url=url, direct=direct, **base), n, processes=args.processes, seconds=args.seconds,
                        submit_rate=args.submit_rate, browsers=args.browsers, browse_interval=args.browse_interval,
                        history=args.history, max_jobs=args.max_jobs, drain_seconds=args.drain_seconds,
                        backlog=n if args.backlog is None else args.backlog)
            runs.append(f)
            line = report([f], cfg0, "").splitlines()[4]
            print(line, flush=True)
            for p in f.get("problems", []):
                print(f"EXACTLY-ONCE BROKEN ({backend}, N={n}): {p}", file=sys.stderr, flush=True)
                failed = True
    return failed


if __name__ == "__main__":
    sys.exit(main())
