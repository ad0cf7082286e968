"""The fleet simulation's report: exactly-once, the figures of a run, the verdict (what saturates first)
and the Markdown tables that go to BENCHMARKS.md."""

from __future__ import annotations

import math
import os

WRITES = ("claim", "progress", "frame", "heartbeat", "complete", "sweep", "seen")


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


def pct(values: list, q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def ms(v) -> str:
    return "-" if v is None else f"{v * 1000:.0f}" if v >= 0.1 else f"{v * 1000:.1f}"


def figures(f: dict, cfg) -> dict:
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
        "empty claims/s": cnt("empty claim") / sec,
        "empty claims/job": cnt("empty claim") / max(1, f.get("window jobs") or 0),
        "blob growth GB/h": (f["after"].get("blobs", 0) - f["before"].get("blobs", 0)) / sec * 3600 / 1e9, "sweeps/s": cnt("sweep") / sec, "seen/s": cnt("seen") / sec,
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
DETAIL = ["backend", "N", "submitted", "window jobs", "empty claims/s", "empty claims/job", "blob growth GB/h", "sweeps/s", "seen/s", "gallery p50 ms", "gallery pages",
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


def report(runs: list[dict], cfg, header: str) -> str:
    rows, detail, stopped = [], [], []
    for f in runs:
        if f["failed to start"]:
            stopped.append(f"| {f['backend']} | {f['N']} | {f['N'] * cfg.time_scale:g} | "
                           + " | ".join("-" for _ in COLUMNS[3:-1]) + f" | {verdict(f, {})} |")
            continue
        o = {**figures(f, cfg), "backend": f["backend"], "N": f["N"], "submitted": f["submitted"],
             "window jobs": f.get("window jobs"),
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
                   + (f"{o['xacts/s'] / n:.2f} | {o['WAL MB/s'] * 1e3 / n:.1f}" if "xacts/s" in o else "- | -") + " |")
    sep = lambda cols: "| " + " | ".join("---" for _ in cols) + " |"  # noqa: E731
    return "\n".join([
        header, "",
        "| " + " | ".join(COLUMNS) + " |", sep(COLUMNS), *rows, *stopped, "",
        "Details (p99 latencies of the store calls in ms; CPU in cores; lock waits mean/max backends; top "
        "waits: wait events of this database's backends, mean backends per sample):", "",
        "| " + " | ".join(DETAIL) + " |", sep(DETAIL), *detail, "",
        "Per real executor (measured rates / (N x time scale)):", "",
        "| backend | N | store writes/s | KB/s of frames + results (database or blobs) | PostgreSQL transactions/s "
        "| WAL KB/s |",
        "| --- | --- | --- | --- | --- | --- |", *per, ""])
