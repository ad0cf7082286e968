"""Load benchmark of the HTTP API (t2i/api/) on the real server (`streamlit run webapp.py`), no models.

For each backend (SQLite: a fresh file; PostgreSQL: a throwaway database made from --pg-admin-url):

1. status reads and submits: one client, then C clients (--clients, threads, each its own keep-alive connection and its
   own client address through the trusted proxy header) each send R requests (--requests) one after
   another: GET /api/v1/jobs/{id}, then POST /api/v1/jobs (a tiny guided job; the limits are raised so
   the quota check runs in every submit's transaction but never refuses). p50/p95 of the server's
   time (its Server-Timing header: from the API's route to the answer's start, queueing for a worker
   thread included) and of the round trip the client sees (plus the server's own event loop and
   Streamlit's middleware, and the client threads' own share of the CPU).
2. event latency: this process plays an executor through the store (claim, then progress() as the
   executor writes it, every 0.5 s plus a random phase) while a client follows the job's events; latency = when the
   progress event for a step arrives - when progress() for that step returned. The stream polls every
   POLL_S (0.25 s), so the expected mean is about POLL_S / 2 plus the read.
3. streams: S clients (--streams) follow queued jobs' events at once for --hold seconds; the server
   process's RSS (from /proc) and CPU time over that window, against the same window idle.

Run:  PYTHONPATH=. .venv/bin/python scripts/bench_api.py [--clients 50] [--requests 20] [--streams 200]
          [--pg-admin-url postgresql://...]     (adds PostgreSQL)
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import random
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from t2i.api.auth import hash_key, new_key  # noqa: E402
from t2i.store import open_store  # noqa: E402

JOB = {"prompt": "a red circle", "preset": "tiny-vqgan-untrained", "options": {"iterations": 3}}
NO_LIMITS = dict(T2I_MAX_ACTIVE_PER_ADDRESS="1000000", T2I_MAX_PER_MINUTE="1000000", T2I_MAX_QUEUED="10000000",
                 T2I_MAX_WORK_PER_ADDRESS="1e12")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(url: str, tmp: Path):
    port = free_port()
    env = dict(os.environ, T2I_DB=url, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
               T2I_TRUSTED_PROXY_HEADER="X-Forwarded-For", **NO_LIMITS)
    log = open(tmp / "web.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "webapp.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/_stcore/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)   # waiting for the server to start
        else:
            raise SystemExit(f"the server did not start: {(tmp / 'web.log').read_text()[-2000:]}")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def call(conn, method: str, path: str, key: str, address: str, body=None):
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": address}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body), "application/json"
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    timing = answer.getheader("Server-Timing") or ""
    call.server_ms = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
    return answer.status, answer.read()


def load(port: int, key: str, clients: int, requests: int, method: str, path: str, body=None):
    """Every request's round trip and server time (Server-Timing) in ms, C clients at once; any answer
    but 2xx fails the run."""
    times, server, failures, start = [], [], [], threading.Barrier(clients)

    def client(n: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        for _ in range(requests):
            t0 = time.perf_counter()
            status, data = call(conn, method, path, key, f"198.18.{n // 250}.{n % 250 + 1}", body)
            times.append((time.perf_counter() - t0) * 1000)
            server.append(call.server_ms)
            if status >= 300:
                failures.append((status, data[:200]))
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return times, server


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def event_latency(port: int, store, key: str, steps: int) -> list[float]:
    """ms from progress() returning to the progress event arriving, per step."""
    _, placed = call(http.client.HTTPConnection("127.0.0.1", port), "POST", "/api/v1/jobs", key, "198.19.0.1", JOB)
    job_id = json.loads(placed)["id"]
    written, arrived = {}, {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/api/v1/jobs/{job_id}/events")
    answer = conn.getresponse()
    lease = None
    while lease is None:
        lease = next((j.lease for j in store.claim_many("bench", 60, 50) if j.id == job_id), None)

    def read():
        for line in answer:
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
                if "step" in data and data.get("status") is None and data["step"] not in arrived:
                    arrived[data["step"]] = time.perf_counter()
            if line.startswith(b"id: end"):
                return

    reader = threading.Thread(target=read)
    reader.start()
    for step in range(1, steps + 1):
        # the executor's progress cadence (t2i/service/executor.py), with a random phase against the
        # stream's polls: a fixed 0.5 s would meet every poll at the same point of its 0.25 s
        time.sleep(0.5 + random.uniform(0, 0.25))
        store.progress(lease, step, 1.0)
        written[step] = time.perf_counter()
    time.sleep(0.5)
    store.fail(lease, "benchmark over")
    reader.join(timeout=30)
    conn.close()
    return [(arrived[s] - written[s]) * 1000 for s in written if s in arrived]


def proc_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return rss, cpu


def streams(port: int, pid: int, key: str, n: int, hold: float) -> dict:
    ids = []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(min(n, 50)):   # streams share jobs: what a stream costs is its own polling
        ids.append(json.loads(call(conn, "POST", "/api/v1/jobs", key, f"198.20.0.{i + 1}", JOB)[1])["id"])
    rss0, cpu0 = proc_usage(pid)
    time.sleep(hold)
    rss_idle, cpu_idle = proc_usage(pid)
    opened = []
    for i in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", f"/api/v1/jobs/{ids[i % len(ids)]}/events")
        answer = c.getresponse()
        answer.readline()   # the first event's first line: the stream is open
        opened.append((c, answer))
    rss1, cpu1 = proc_usage(pid)
    time.sleep(hold)
    rss2, cpu2 = proc_usage(pid)
    for c, _ in opened:
        c.close()
    return {"idle_rss_mb": rss_idle, "idle_cpu_pct": 100 * (cpu_idle - cpu0) / hold,
            "streams_rss_mb": rss2, "streams_cpu_pct": 100 * (cpu2 - cpu1) / hold}


def run(name: str, url: str, args) -> None:
    store = open_store(url)
    key = new_key()
    store.create_key("bench", hash_key(key))
    with tempfile.TemporaryDirectory() as tmp, server(url, Path(tmp)) as (port, pid):
        first = json.loads(call(http.client.HTTPConnection("127.0.0.1", port), "POST", "/api/v1/jobs", key,
                                "198.18.255.1", JOB)[1])["id"]
        load(port, key, 5, 5, "GET", f"/api/v1/jobs/{first}")   # warm-up: imports, connections
        for (label, method, path, body), clients in itertools.product(
                (("status read", "GET", f"/api/v1/jobs/{first}", None), ("submit", "POST", "/api/v1/jobs", JOB)),
                (1, args.clients)):   # 1: the time one request takes; C: under load
            t0 = time.perf_counter()
            times, served = load(port, key, clients, args.requests * (5 if clients == 1 else 1), method, path, body)
            wall = time.perf_counter() - t0
            print(f"{name}  {label:<12} {len(times)} requests, {clients} clients: server p50 "
                  f"{pct(served, 50):.1f} ms, p95 {pct(served, 95):.1f} ms; round trip p50 {pct(times, 50):.1f} ms, "
                  f"p95 {pct(times, 95):.1f} ms; {len(times) / wall:.0f} requests/s", flush=True)
        lat = event_latency(port, store, key, args.steps)
        print(f"{name}  event latency over {len(lat)} steps: mean {statistics.mean(lat):.0f} ms, "
              f"max {max(lat):.0f} ms", flush=True)
        cost = streams(port, pid, key, args.streams, args.hold)
        print(f"{name}  {args.streams} streams: RSS {cost['idle_rss_mb']:.0f} -> {cost['streams_rss_mb']:.0f} MB, "
              f"CPU {cost['idle_cpu_pct']:.0f}% idle -> {cost['streams_cpu_pct']:.0f}% of a core", flush=True)
    store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--hold", type=float, default=10.0)
    p.add_argument("--pg-admin-url", default=None)
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite  ", f"sqlite:///{tmp}/t2i.db", args)
    if args.pg_admin_url:
        from t2i.store.postgres import temporary_database

        with temporary_database(args.pg_admin_url, "t2i_bench_") as url:
            run("postgres", url, args)
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
