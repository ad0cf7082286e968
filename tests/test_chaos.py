"""The chaos run (scripts/chaos.py), short: a minute of executors, the web app and visitors under
SIGKILLs, a full disk, the SQLite write lock and PostgreSQL restarts, then the invariants. The
script exits 1 on any violation; here every fault kind must also have been injected and every row of
its table must say "held". Besides: the invariant checker names what broke, on a real SQLite store."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_parts import checks  # noqa: E402
from chaos_parts.pgcluster import pg_bin  # noqa: E402
from chaos_parts.report import ROWS  # noqa: E402
from hostile import hostile_options, hostile_pngs, typing_problems  # noqa: E402
from md_tables import table  # noqa: E402

from t2i.service.queue import submit_job  # noqa: E402
from t2i.store import Result, open_store  # noqa: E402

# A full disk is a small tmpfs under the store: root only (scripts/chaos_parts/faults.py says why).
FULL_DISK = {"fill disk"} if os.geteuid() == 0 else set()


def chaos(backend: str, *extra: str) -> subprocess.CompletedProcess:
    # Bounds far above a healthy run's times (BENCHMARKS.md has those): what fails here is a stall
    # (today's infotext regex: about 30 s on the corpus's 64 KB line), not a slow machine.
    bounds = ["--health-bound", "20", "--page-bound", "60", "--parse-bound", "10"]
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "chaos.py"), "--backend", backend, "--short",
                           "--seed", "7", *bounds, *extra], capture_output=True, text=True, timeout=900, cwd=ROOT)


def check(run: subprocess.CompletedProcess, faults: set[str]) -> None:
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    injected = {row["fault"]: int(row["injected"]) for row in table(run.stdout, "fault") if not row["fault"].startswith("(")}
    assert set(injected) == faults and all(n >= 1 for n in injected.values()), injected
    held = table(run.stdout, "what held")
    assert len(held) == len(ROWS) and all(row["verdict"] == "held" for row in held), held
    assert "p99" in next(r["figures"] for r in held if r["what held"].startswith("health"))
    assert "Violations: 0" in run.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_chaos_short_sqlite():
    check(chaos("sqlite"), {"kill executor", "kill web", "hold write lock"} | FULL_DISK)


@pytest.mark.subprocess
@pytest.mark.slow
def test_chaos_short_postgres(pg_admin_url):
    # its own throwaway cluster (restarted) where the binaries are here; else the tests' server, never restarted
    own = pg_bin() is not None
    run = chaos("postgres", *([] if own else ["--pg-url", pg_admin_url]))
    check(run, {"kill executor", "kill web"} | ({"restart postgres"} | FULL_DISK if own else set()))


@pytest.mark.subprocess
def test_bad_arguments_are_one_line():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "chaos.py"), "--executors", "0"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "--executors at least 1" in run.stderr.splitlines()[-1]


def test_invariants_name_what_broke(tmp_path):
    url = f"sqlite:///{tmp_path / 't2i.db'}"
    store = open_store(url)
    done, left, cancelled = (submit_job(store, f"job {i}", "tiny-vqgan-untrained", iterations=2, cutn=2)
                             for i in range(3))
    job = store.claim("w", 60)
    assert job.id == done
    assert store.complete(job.lease, Result(done, b"GIF89a", b"png", b"thumb", {}, 64, 64, 1, time.time()))
    store.cancel(cancelled)
    store.close()
    statuses, problems = checks.invariants(url, [done, left, cancelled])
    assert statuses == {"done": 1, "queued": 1, "cancelled": 1}
    assert problems == [f"jobs neither done, failed nor cancelled after the drain: 1 (e.g. [{left}])"]

    with sqlite3.connect(tmp_path / "t2i.db") as raw:  # what no store call can make: damage to find
        raw.execute("PRAGMA foreign_keys = OFF")
        raw.execute("UPDATE jobs SET status = 'failed', error = 'first line\nsecond line' WHERE id = ?", (left,))
        raw.execute("CREATE TEMP TABLE orphan AS SELECT * FROM results WHERE job_id = ?", (done,))
        raw.execute("UPDATE orphan SET job_id = 999")
        raw.execute("INSERT INTO results SELECT * FROM orphan")
        raw.execute("UPDATE jobs SET attempts = 9 WHERE id = ?", (cancelled,))
    logged = {done: ["done", "done"], cancelled: ["done"]}  # as two executors' logs would say it
    _, problems = checks.invariants(url, [done, left, cancelled, 12345], logged)
    assert problems == [f"failed jobs without a one-line error: 1 (e.g. [{left}])",
                        f"jobs claimed more often than their max_attempts: 1 (e.g. [{cancelled}])",
                        "results without their job: 1 (e.g. [999])",
                        f"jobs ended by more than one write (executors' logs): 1 (e.g. [{done}])",
                        f"jobs whose logged end is not their status: 1 (e.g. [{cancelled}])",
                        "acknowledged jobs missing from the store: 1 (e.g. [12345])"]


def test_the_hostile_corpus_is_what_it_says():
    from PIL import Image
    import io

    pngs = hostile_pngs()
    with Image.open(io.BytesIO(pngs["64 KB parameters line without a colon"]())) as im:
        text = im.info["parameters"]
        assert im.size == (1, 1) and 60_000 < len(text) < 64 * 1024 and ":" not in text
    big = pngs["12000x12000 pixels (about 420 KB)"]()
    assert len(big) < 600_000
    with Image.open(io.BytesIO(big)) as im:  # the header only: its pixels are not decoded here
        assert im.size == (12000, 12000)
    # The form leaves wrongly typed fields out (refill.form_values): nothing gets past it.
    for params in ({"prompt": "a cat", "upscale": 5, "size": 5}, {"prompt": "a \ud800", "seed": "x"}, None,
                   {"prompt": "a cat", "size": [64, 64], "upscale": ["srcnn-x2"]}, [1, 2], {"prompt": {"a": 1}}):
        assert typing_problems(params, ["shapes"]) == [], params
    assert all({"prompt", "preset"} <= set(fields) for fields in hostile_options().values())


def test_the_ends_executors_logged_are_read(tmp_path):
    from chaos_parts.fleet import Fleet

    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path / 't2i.db'}", 2, 8501, 6.0)  # nothing started
    (tmp_path / "executor-0.log").write_text(
        "2026-12-07 10:54:03,931 INFO t2i.executor: job 146: done\n"
        "2026-12-07 10:54:03,934 INFO t2i.executor: job 153 claimed (attempt 1): 'job 7: done'\n"
        "2026-12-07 10:55:43,432 INFO t2i.executor: job 22: lease lost: wrote nothing more\n"
        "2026-12-07 10:55:44,000 INFO t2i.executor: job 23: failed (out of CPU memory at 64x64: lower cutn)\n")
    (tmp_path / "executor-1.log").write_text("2026-12-07 10:56:00,000 INFO t2i.executor: job 146: done\n")
    assert fleet.ends() == {146: ["done", "done"], 23: ["failed"]}


def test_tracebacks_are_found_in_plain_and_in_streamlits_coloured_logs(tmp_path):
    from chaos_parts.fleet import Fleet

    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path / 't2i.db'}", 1, 8501, 6.0)  # nothing started
    (tmp_path / "executor-0.log").write_text(
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    boom()\nValueError: boom\n")
    (tmp_path / "web.log").write_text(
        "\x1b[31m──\x1b[0m \x1b[1;31mTraceback \x1b[0m\x1b[1;2;31m(most recent call last)\x1b[0m\n"
        "\x1b[31m│\x1b[0m x.py:1 in <module>\n\x1b[1;91mTypeError: \x1b[0mcan only join an iterable\n")
    assert fleet.tracebacks() == ["executor 0: ValueError: boom (executor-0.log line 1)",
                                  "web: TypeError: can only join an iterable (web.log line 1)"]


def test_an_executor_refused_by_a_restarting_database_counts_as_a_restart_not_an_exit(tmp_path):
    """An executor started just before a PostgreSQL restart may connect while it is down: it exits 2 with
    one line at once (by design), and supervise.sh starts it again; the run counts that as the fault's
    doing. The line is the real executor's, against a port nothing listens on."""
    from chaos_parts.fleet import Fleet
    from chaos_parts.pgcluster import free_port

    url = f"postgresql://chaos:chaos@127.0.0.1:{free_port()}/chaos"
    fleet = Fleet(tmp_path, url, 1, 8501, 6.0)  # nothing started
    m = fleet.executors()[0]
    m.spawned = time.monotonic()
    with open(m.log, "w") as log:
        code = subprocess.run(m.argv, cwd=ROOT, env=fleet.env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=120).returncode
    assert code == 2 and "connect" in m.log.read_text()
    assert not fleet._refused_by_restart(m, code)  # no restart on record: an exit nobody caused
    with fleet.database_restarting():
        assert fleet._refused_by_restart(m, code)
        assert not fleet._refused_by_restart(m, 1) and not fleet._refused_by_restart(fleet.web, code)
    assert fleet._refused_by_restart(m, code)  # the restart overlapped its start
    m.spawned = time.monotonic()
    assert not fleet._refused_by_restart(m, code)  # started after the restart had ended
    with fleet.database_restarting():
        m.log.write_text("error: --batch x: use a whole number >= 1, or auto\n")
        assert not fleet._refused_by_restart(m, code)  # another refusal is still a violation
