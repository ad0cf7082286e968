"""The fleet simulation's monitoring: CPU from /proc (the machine, the clients, this database's postgres
processes), and PostgreSQL's catalog (connections, lock waits, transactions, WAL, size). These
queries read the server's catalog, not the job tables, which is why they live here and not in
t2i/store."""

from __future__ import annotations

import os
import threading
from pathlib import Path


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


def folder_size(folder: str | None) -> int:
    """Bytes of the files under `folder` (the blob folder), 0 when there is none."""
    if not folder or not os.path.isdir(folder):
        return 0
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass  # deleted while counted (a finished job's frames)
    return total
