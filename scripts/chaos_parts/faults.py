"""The faults the chaos run injects, one at a time at random moments:

    kill executor     SIGKILL to one executor (mid-job, as a lost host); the fleet restarts it
    kill web          SIGKILL to the web app; the health check waits for it to come back
    restart postgres  pg_ctl restart of the run's own cluster, -m fast or -m immediate (a crash)
    fill disk         the store's filesystem (a small tmpfs) filled to the last byte for a few seconds, then freed
    hold write lock   (SQLite) BEGIN IMMEDIATE from a side connection for a few seconds

Why a tmpfs for the full disk: SQLite's `PRAGMA max_page_count` is per connection (a side
connection's limit binds nobody else), and a file-size rlimit kills the process it is set on
(SIGXFSZ); a small filesystem is the honest fault, and mounting one needs root. Without root the
fault is left out, and the table says so.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

KINDS = ("kill executor", "kill web", "restart postgres", "fill disk", "hold write lock")


def mount_tmpfs(folder: Path, megabytes: int) -> bool:
    """A tmpfs of `megabytes` at folder (root only); False where it cannot be had."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "chaos", str(folder)],
                          capture_output=True, text=True)
    return done.returncode == 0


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> int:
    """Writes a ballast file until the filesystem says ENOSPC; returns the bytes written."""
    ballast, written = folder / "ballast", 0
    with open(ballast, "wb", buffering=0) as f:
        for size in (2**20, 2**14, 2**10, 64):
            block = b"\0" * size
            while True:
                try:
                    written += f.write(block)
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
    return written


class Injector:
    """inject(kind) does one fault and waits for its end; `counts` per kind, `notes` what happened."""

    def __init__(self, fleet, health, rng, *, sqlite_path: Path | None, cluster, disk: Path | None,
                 hold_s: tuple[float, float]):
        self.fleet, self.health, self.rng = fleet, health, rng
        self.sqlite_path, self.cluster, self.disk, self.hold_s = sqlite_path, cluster, disk, hold_s
        self.counts: Counter = Counter()
        self.notes: Counter = Counter()

    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in ("kill executor", "kill web")
                or (k == "restart postgres" and self.cluster is not None)
                or (k == "fill disk" and self.disk is not None)
                or (k == "hold write lock" and self.sqlite_path is not None)]

    def inject(self, kind: str) -> None:
        getattr(self, "_" + kind.replace(" ", "_"))()
        self.counts[kind] += 1

    def _hold(self) -> float:
        return self.rng.uniform(*self.hold_s)

    def _kill_executor(self) -> None:
        self.fleet.kill(self.rng.choice(self.fleet.executors()))

    def _kill_web(self) -> None:
        self.health.expect_down()
        self.fleet.kill(self.fleet.web)

    def _restart_postgres(self) -> None:
        mode = self.rng.choice(["fast", "immediate"])
        with self.fleet.database_restarting():
            self.cluster.restart(mode)
        self.notes[f"postgres restarts -m {mode}"] += 1

    def _fill_disk(self) -> None:
        try:
            written = fill(self.disk)
            self.notes["disk filled, MB written at most"] = max(self.notes["disk filled, MB written at most"],
                                                                written // 2**20)
            time.sleep(self._hold())  # the fault lasting, not synchronisation
        finally:
            (self.disk / "ballast").unlink(missing_ok=True)
        if self.cluster is not None and self.cluster.ensure_running():
            self.notes["postgres stopped on a full disk (started again)"] += 1

    def _hold_write_lock(self) -> None:
        side = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        try:
            side.execute("BEGIN IMMEDIATE")
            time.sleep(self._hold())  # the fault lasting, not synchronisation
            side.execute("ROLLBACK")
        finally:
            side.close()
