"""The chaos run: the service under faults for a set time, then its invariants checked.

For --minutes it runs --executors executor processes (job_executor.py on the CPU, tiny untrained
presets), the web app (`streamlit run webapp.py`) and visitors that submit jobs and compare groups,
vote, read gallery pages and cancel, through the functions the pages call, plus one hostile visitor
going round tests/hostile.py (PNGs for "Open a PNG", option values for a submit) with a time and a
memory bound. Meanwhile it injects, one at a time, at random moments (--fault-every seconds on
average): SIGKILL to an executor or the web app (restarted after 1 s, as scripts/supervise.sh does),
a restart of PostgreSQL (its own throwaway cluster; -m fast or immediate), a full disk under the
store (a small tmpfs, root only) and the SQLite write lock held from a side connection.

Then it stops the faults and visitors, lets the executors drain the queue and checks: every job done,
failed with one line or cancelled, exactly once; no result without its job; no acknowledged job lost;
the health check answered within --health-bound whenever the app was not killed (p50/p99 reported);
peak RSS of each process under --rss-mb; every hostile input read or refused within its bounds, with
one line; no process exiting by itself or logging a traceback. It prints a Markdown table (what was
injected, what held) and exits 1 on any violation.

    python scripts/chaos.py --backend sqlite --minutes 10 --executors 3 --seed 1
    python scripts/chaos.py --backend postgres --short          # about a minute (tests/test_chaos.py)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]  # t2i, chaos_parts, hostile

from chaos_parts import checks  # noqa: E402
from chaos_parts.faults import Injector, mount_tmpfs, unmount  # noqa: E402
from chaos_parts.fleet import Fleet  # noqa: E402
from chaos_parts.health import Health  # noqa: E402
from chaos_parts.pages import PageVisitor  # noqa: E402
from chaos_parts.pgcluster import Cluster, free_port  # noqa: E402
from chaos_parts.probe import Probe  # noqa: E402
from chaos_parts.report import report  # noqa: E402
from chaos_parts.visitors import Visitors  # noqa: E402

LEASE_S = 6.0      # short leases: a killed executor's jobs go back to the queue within seconds
TMPFS_MB = 256     # the store's filesystem when a full disk can be made


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="run the service under faults, then check its invariants")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the faults and visitors last")
    p.add_argument("--short", action="store_true", help="about a minute, faults every 4 s (CI)")
    p.add_argument("--executors", type=int, default=3)
    p.add_argument("--visitors", type=int, default=2)
    p.add_argument("--visit-every", type=float, default=1.0, help="mean seconds between one visitor's actions")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fault-every", type=float, default=15.0, help="mean seconds between faults")
    p.add_argument("--hold", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                   help="seconds a full disk or the write lock lasts")
    p.add_argument("--health-bound", type=float, default=5.0, help="seconds a health check may take")
    p.add_argument("--page-bound", type=float, default=15.0, help="seconds a page may take to run")
    p.add_argument("--parse-bound", type=float, default=2.0, help="seconds one hostile input may take")
    p.add_argument("--parse-mb", type=float, default=256.0, help="MB one hostile input may cost")
    p.add_argument("--rss-mb", type=float, default=2048.0, help="MB of RSS any process may reach")
    p.add_argument("--drain-minutes", type=float, default=5.0)
    p.add_argument("--pg-url", default=None, help="an existing PostgreSQL server's admin URL instead of a "
                   "cluster of the run's own (its database is made and dropped; the server is never restarted)")
    p.add_argument("--report", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    if args.short:
        args.minutes, args.fault_every, args.drain_minutes, args.hold = 1.0, 4.0, 3.0, (1.0, 3.0)
        args.visit_every = 0.5
        args.executors = min(args.executors, 2)
    if args.executors < 1 or args.visitors < 0 or min(args.minutes, args.fault_every, args.visit_every) <= 0:
        p.error("--executors at least 1, --visitors at least 0, --minutes, --fault-every and --visit-every above 0")
    return args


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load}")


def store_url(args, stack: ExitStack, work: Path) -> tuple[str, object, Path | None]:
    """(the store's URL, the cluster the run may restart or None, the folder a full disk fills or None)."""
    disk = work / "disk"
    if not mount_tmpfs(disk, TMPFS_MB):
        disk = None
    else:
        stack.callback(unmount, work / "disk")
    home = disk or work
    if args.backend == "sqlite":
        return f"sqlite:///{home / 't2i.db'}", None, disk
    if args.pg_url:
        from t2i.store.postgres import temporary_database

        return stack.enter_context(temporary_database(args.pg_url, "t2i_chaos_")), None, None
    cluster = Cluster(home / "pg")
    stack.callback(cluster.stop)
    cluster.start()
    return cluster.url, cluster, disk


def fault_loop(injector: Injector, until: float, mean_s: float, rng: random.Random) -> None:
    """Faults at random moments until `until`, the kinds in shuffled rounds: every kind comes up
    once before any comes up twice (so even the short run injects each)."""
    kinds, order = injector.kinds(), []
    while True:
        wait = rng.uniform(0.5, 1.5) * mean_s
        if time.monotonic() + wait >= until:
            time.sleep(max(0.0, until - time.monotonic()))  # the run's remaining time, faults over
            return
        time.sleep(wait)  # the next fault's moment, drawn from the seed
        if not order:
            order = rng.sample(kinds, len(kinds))
        injector.inject(order.pop())


def run(args, work: Path) -> tuple[dict, list[str]]:
    """The run itself; returns (figures for the table, violations)."""
    rng = random.Random(args.seed)
    figures: dict = {"machine at start": machine()}
    with ExitStack() as stack:
        url, cluster, disk = store_url(args, stack, work)
        figures["store"] = f"{args.backend}" + (" on a tmpfs" if disk else "") + (
            " (own cluster)" if cluster else " (--pg-url, no restarts)" if args.backend == "postgres" else "")
        from t2i.store import open_store

        open_store(url).close()  # the schema, before every process races to make it
        port = free_port()
        fleet = Fleet(work, url, args.executors, port, LEASE_S)
        health = Health(port, args.health_bound)
        probe = Probe(args.parse_bound, args.parse_mb)
        stack.callback(probe.close)
        stack.callback(fleet.stop)
        fleet.start()
        if not health.wait_up(120):
            return figures, ["the web app did not answer its health check within 120 s of its start"]
        visitors = Visitors(url, args.visitors, args.seed, probe, args.visit_every)
        pages = PageVisitor(port, health, args.page_bound)
        injector = Injector(fleet, health, rng, sqlite_path=Path(url[len("sqlite:///"):]) if args.backend == "sqlite"
                            else None, cluster=cluster, disk=disk, hold_s=tuple(args.hold))
        health.start()
        visitors.start()
        pages.start()
        start = time.monotonic()
        fault_loop(injector, start + args.minutes * 60, args.fault_every, rng)
        visitors.finish()
        pages.finish()
        figures["pages"] = pages.seconds
        figures, violations = after(args, url, fleet, health, visitors, injector, figures)
        return figures, violations + capped(pages.problems)


def after(args, url, fleet, health, visitors, injector, figures) -> tuple[dict, list[str]]:
    """The drain and the checks (the fleet still running, the faults over)."""
    from t2i.store import open_store

    violations = [f"visitor: {p}" for p in visitors.problems]
    store = open_store(url)
    try:
        figures["drain seconds"] = drained = checks.drain(store, args.drain_minutes * 60)
    finally:
        store.close()
    if drained is None:
        violations.append(f"the queue did not drain within {args.drain_minutes:g} minutes")
    if not health.wait_up(120):
        violations.append("the web app did not answer its health check after the run")
    health.finish()
    refused = sum(m.refused_starts for m in fleet.members)
    if refused:  # restarted as supervise.sh would: an exit the fault caused, not one nobody did
        injector.notes["executor starts refused by the restarting database"] = refused
    statuses, problems = checks.invariants(url, visitors.ids, fleet.ends())
    violations += problems
    figures.update(statuses=statuses, failures=checks.failure_reasons(url), acknowledged=len(set(visitors.ids)),
                   actions=visitors.counts, refused=visitors.refused, gallery_s=visitors.gallery_s,
                   hostile=visitors.hostile_seen, rounds=visitors.rounds, injected=injector.counts, notes=injector.notes, health=health,
                   rss={m.name: m.peak_rss_mb for m in fleet.members},
                   starts={m.name: m.starts for m in fleet.members}, machine_at_end=machine())
    violations += capped([f"health: {s}" for s in health.slow])
    violations += [f"hostile {name}: {'; '.join(p)}" for name, p in visitors.hostile_seen.items() if p]
    violations += [f"memory: {name} reached {mb:.0f} MB (bound {args.rss_mb:g} MB)"
                   for name, mb in figures["rss"].items() if mb > args.rss_mb]
    violations += [e for m in fleet.members for e in m.own_exits]
    violations += [f"traceback in {t}" for t in fleet.tracebacks()]
    return figures, violations


def capped(problems: list[str], first: int = 8) -> list[str]:
    """A stall fails every check while it lasts: the first few, and how many more."""
    more = len(problems) - first
    return problems[:first] + ([f"{problems[0].split(':')[0]}: ... and {more} more like these"] if more > 0 else [])


def main(argv=None) -> int:
    args = parse(argv)
    command = "python scripts/chaos.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    work = Path(tempfile.mkdtemp(prefix="t2i-chaos-"))
    work.chmod(0o755)  # the postgres user (a cluster made as root) reaches its folder through it
    violations = ["the run did not finish"]
    try:
        figures, violations = run(args, work)
        text = report(args, command, figures, violations)
        print(text)
        if args.report:
            args.report.write_text(text + "\n")
        return 1 if violations else 0
    except RuntimeError as e:  # a step of the set-up (the cluster) failed: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if violations or os.environ.get("T2I_CHAOS_KEEP"):  # the processes' logs, for the post-mortem
            print(f"(the processes' logs: {work})", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
