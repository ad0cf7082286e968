"""The fleet simulation (scripts/simulate_fleet.py), short: 4 executors for a few seconds with time
scaled 30x and half of the jobs' executors killed mid-job, on SQLite and PostgreSQL. The script itself
fails (exit 1) unless every submitted job ends done exactly once; here its report must also carry
every figure."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import simulate_fleet  # noqa: E402
from md_tables import table  # noqa: E402

FIGURES = ["claims/s", "pickup p50 ms", "pickup p99 ms", "heartbeats/s", "progress/s", "frames/s", "frame MB/s",
           "result MB/s", "store writes/s", "growth GB/h", "gallery p95 ms", "first to saturate"]


def simulate(tmp_path, backend: str, *extra: str) -> tuple[str, subprocess.CompletedProcess]:
    report = tmp_path / "fleet.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "simulate_fleet.py"), "--backends", backend, "--executors", "4",
         "--seconds", "3", "--time-scale", "30", "--kill-rate", "0.5", "--history", "30",
         "--processes", "2", "--browsers", "2", "--browse-interval", "0.2", "--report", str(report), *extra],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return report.read_text(), run


def check(text: str, backend: str) -> None:
    (row,) = table(text, "backend")
    assert row["backend"] == backend and row["N"] == "4" and row["equiv. executors"] == "120"
    for name in FIGURES:
        assert row[name] not in ("", "-"), (name, row)
    for name in FIGURES[:-1]:
        float(row[name])  # a number
    assert float(row["claims/s"]) > 0 and float(row["frames/s"]) > 0 and float(row["heartbeats/s"]) > 0
    (detail,) = table(text, "backend | N | submitted")
    assert int(detail["kills"]) >= 1  # executors died mid-job, and still every job was done once
    assert int(detail["submitted"]) >= 4
    assert re.search(r"^Machine: .*2026|^Machine: .*\d{4}-\d\d-\d\d", text, re.M) and "Command: `" in text
    (per,) = table(text, "backend | N | store writes/s")
    assert float(per["store writes/s"]) > 0


@pytest.mark.subprocess
def test_fleet_sqlite(tmp_path):
    text, run = simulate(tmp_path, "sqlite")
    assert "EXACTLY-ONCE BROKEN" not in run.stderr
    check(text, "sqlite")


@pytest.mark.subprocess
def test_fleet_postgres(tmp_path, pg_admin_url):
    # as the executor claims and beats now (claim_many, heartbeat_all); the SQLite run uses claim/heartbeat
    text, run = simulate(tmp_path, "postgresql", "--pg-admin-url", pg_admin_url, "--claim-many")
    assert "EXACTLY-ONCE BROKEN" not in run.stderr
    check(text, "postgresql")
    (detail,) = table(text, "backend | N | submitted")
    assert detail["max_connections"].isdigit() and float(detail["xacts/s"]) > 0


def test_exactly_once_names_what_broke():
    counts = {"queued": 0, "running": 0, "done": 3, "failed": 0, "cancelled": 0}
    assert simulate_fleet.exactly_once([1, 2, 3], [3, 1, 2], counts, 3, 0) == []
    twice = simulate_fleet.exactly_once([1, 2, 3], [1, 2, 2, 3], counts, 3, 0)
    assert len(twice) == 1 and "1 jobs completed twice (e.g. [2])" in twice[0]
    lost = simulate_fleet.exactly_once([1, 2, 3, 4], [1, 2, 3], counts, 3, 0)
    assert any("1 submitted jobs not done (e.g. [4])" in p for p in lost)
    assert any("store counts" in p for p in lost)  # the store has 3 done, 4 were submitted
    stray = simulate_fleet.exactly_once([1, 2], [1, 2, 9], {**counts, "done": 2}, 2, 0)
    assert stray == ["1 jobs done that were never submitted (e.g. [9])"]
    assert simulate_fleet.exactly_once([1], [1], {**counts, "done": 1, "queued": 1}, 1, 0)  # a job left queued


@pytest.mark.subprocess
def test_bad_arguments_are_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate_fleet.py"), "--kill-rate", "1.5"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "--kill-rate in [0, 1)" in run.stderr.splitlines()[-1]
    assert not os.path.exists(tmp_path / "fleet.md")
