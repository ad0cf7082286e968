"""What AUTOMATIC1111's txt2img (t2i/api/a1111.py) adds on the real server (`streamlit run webapp.py`), no models.

1. answer delay: a client posts txt2img (a batch of --batch images, so --batch jobs) and waits; this
   process plays the executor through the store (claims the jobs, completes each with a real 64x64 PNG
   carrying its parameters) after 0.3 to 1 s, a random phase against the route's reads; delay = when
   the answer has arrived - when the last complete() returned.
   The route reads the jobs every POLL_S (0.25 s), so the expected mean is about POLL_S / 2 plus
   reading the results, encoding them and the transfer.
2. waiting: W clients (--waiting) each post a txt2img whose job nobody runs, and hold for --hold
   seconds: the server's CPU over that window against the same window idle, and the round trip of a
   status read (GET /api/v1/jobs/{id}) meanwhile. Then an interrupt per key ends them (each answers).

Run:  PYTHONPATH=. .venv/bin/python scripts/bench_a1111.py [--rounds 10] [--batch 4] [--waiting 50]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_api import call, pct, proc_usage, server  # noqa: E402
from t2i.api.auth import hash_key, new_key  # noqa: E402
from t2i.store import Result, open_store  # noqa: E402

PRESET = "tiny-vqgan-untrained"


def png(seed: int) -> bytes:
    from PIL import Image

    from t2i.output.render import png_bytes

    params = {"prompt": "a red circle", "preset": PRESET, "family": "guided", "seed": seed, "size": [64, 64],
              "iterations": 2, "cutn": 8, "lr": 0.1}
    return png_bytes(Image.new("RGB", (64, 64), (seed % 256, 0, 0)), params)


def body(batch: int, seed: int) -> dict:
    return {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": seed, "batch_size": batch,
            "override_settings": {"sd_model_checkpoint": PRESET}}


def post(port: int, key: str, address: str, payload: dict, out: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    out["status"], out["data"] = call(conn, "POST", "/sdapi/v1/txt2img", key, address, payload)
    out["at"] = time.perf_counter()
    conn.close()


def complete_all(store, n: int) -> float:
    """Claim n queued jobs as an executor would and complete them; when the last complete() returned."""
    done = 0
    while done < n:
        jobs = store.claim_many("bench", 60, n - done)
        if not jobs:
            time.sleep(0.005)   # the request has not queued them yet
            continue
        # a run's length, with a random phase against the route's reads: completing at once would
        # meet every round at the same point of its 0.25 s poll
        time.sleep(random.uniform(0.3, 1.0))
        for job in jobs:
            seed = int(job.spec["seed"])
            image = png(seed)
            store.complete(job.lease, Result(job_id=job.id, gif=b"GIF89a", png=image, thumbnail=image,
                                             parameters={"seed": seed, "size": [64, 64], "iterations": 2},
                                             width=64, height=64, seed=seed, created_at=0.0))
            done += 1
    return time.perf_counter()


def answer_delay(port: int, store, key: str, rounds: int, batch: int) -> list[float]:
    delays = []
    for r in range(rounds):
        out: dict = {}
        client = threading.Thread(target=post, args=(port, key, "198.20.0.1", body(batch, 1000 * r), out))
        client.start()
        finished = complete_all(store, batch)
        client.join(timeout=120)
        if out.get("status") != 200 or len(json.loads(out["data"])["images"]) != batch:
            raise SystemExit(f"txt2img failed: {out.get('status')} {out.get('data', b'')[:200]}")
        delays.append((out["at"] - finished) * 1000)
    return delays


def waiting(port: int, pid: int, store, waiters: int, hold: float) -> dict:
    keys = [new_key() for _ in range(waiters)]
    for i, key in enumerate(keys):
        store.create_key(f"waiter-{i}", hash_key(key))
    rss0, cpu0 = proc_usage(pid)
    time.sleep(hold)   # the idle window measured
    _, cpu1 = proc_usage(pid)
    outs = [{} for _ in keys]
    clients = [threading.Thread(target=post, args=(port, k, f"198.21.0.{i % 250 + 1}", body(1, i), o))
               for i, (k, o) in enumerate(zip(keys, outs))]
    for c in clients:
        c.start()
    while sum(store.counts()[s] for s in ("queued", "running")) < waiters:
        time.sleep(0.1)   # until every request has queued its job
    _, cpu2 = proc_usage(pid)
    reads, conn = [], http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    some = store.jobs(status="queued", limit=1)[0].id
    end = time.monotonic() + hold
    while time.monotonic() < end:
        t0 = time.perf_counter()
        call(conn, "GET", f"/api/v1/jobs/{some}", keys[0], "198.22.0.1")
        reads.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.1)   # a reader's pace, not a wait on a result
    rss3, cpu3 = proc_usage(pid)
    for i, key in enumerate(keys):
        call(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "POST", "/sdapi/v1/interrupt", key,
             f"198.21.0.{i % 250 + 1}")
    for c in clients:
        c.join(timeout=120)
    answered = sum(1 for o in outs if o.get("status") == 200)
    window = time.monotonic() - (end - hold)
    return {"idle_cpu_pct": 100 * (cpu1 - cpu0) / hold, "wait_cpu_pct": 100 * (cpu3 - cpu2) / window,
            "rss_mb": (rss0, rss3), "read_p50": pct(reads, 50), "read_p95": pct(reads, 95), "answered": answered}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--waiting", type=int, default=50)
    p.add_argument("--hold", type=float, default=10.0)
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/t2i.db"
        store, key = open_store(url), new_key()
        store.create_key("bench", hash_key(key))
        with server(url, Path(tmp)) as (port, pid):
            answer_delay(port, store, key, 1, 1)   # warm-up: imports, the preset list
            delays = answer_delay(port, store, key, args.rounds, args.batch)
            print(f"answer delay, {args.rounds} txt2img of {args.batch} images: mean {statistics.mean(delays):.0f} ms, "
                  f"min {min(delays):.0f}, max {max(delays):.0f}", flush=True)
            cost = waiting(port, pid, store, args.waiting, args.hold)
            print(f"{args.waiting} txt2img waiting: server CPU {cost['idle_cpu_pct']:.0f}% idle -> "
                  f"{cost['wait_cpu_pct']:.0f}% of a core, RSS {cost['rss_mb'][0]:.0f} -> {cost['rss_mb'][1]:.0f} MB; "
                  f"a status read meanwhile p50 {cost['read_p50']:.1f} ms, p95 {cost['read_p95']:.1f} ms; "
                  f"{cost['answered']} answered after the interrupts", flush=True)
        store.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
