"""Gallery query benchmark: server-side time of a gallery page with a large history (not a test).

Seeds N finished jobs (default 10,000; thumbnails of a realistic size, small stand-in GIF/PNG) through
the store's own submit/claim/complete, adds votes so the "most preferred" sort has tallies, then times
the queries the gallery page makes (count + one page of thumbnails) for several filters, on SQLite
and PostgreSQL. Prints a markdown table of median and p95 milliseconds.

    PYTHONPATH=. .venv/bin/python scripts/bench_gallery.py [--results 10000] [--repeat 20] [--no-pg]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime

from PIL import Image

from t2i.spec import make_spec
from t2i.store import Result, open_store

PG_ADMIN = os.environ.get("T2I_TEST_PG_URL", "postgresql://t2i_test:t2i_test@127.0.0.1:5432/postgres")
WORDS = "red blue green cat dog lighthouse storm castle forest river painting photo sunset city robot".split()
PRESETS = ["vqgan_imagenet_f16_16384", "wikiart_16384", "biggan-deep-256", "tiny-vqgan-untrained"]


def thumbnail(rng: random.Random) -> bytes:
    image = Image.new("RGB", (160, 160), tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def seed(store, n: int, rng: random.Random) -> None:
    thumbs = [thumbnail(rng) for _ in range(16)]
    with store.transaction():
        for i in range(n):
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            spec = make_spec(prompt, rng.choice(PRESETS), iterations=300)
            store.submit(spec.to_dict(), batch_key=spec.batch_key, total=spec.total_steps)
            job = store.claim("bench", 60)
            store.complete(job.lease, Result(job.id, b"GIF89a" + b"\0" * 2000, b"\x89PNG" + b"\0" * 4000,
                                             rng.choice(thumbs), {"prompt": prompt}, 288, 288, i, 0.0))
        for _ in range(n // 5):
            a, b = rng.sample(range(1, n + 1), 2)
            store.vote(uuid.uuid4().hex, a, b, rng.choice(["left", "right", "tie", "both_bad"]))


QUERIES = {
    "newest, page 1": dict(),
    "newest, middle page": dict(offset="middle"),
    "most preferred, page 1": dict(sort="preferred"),
    "search 'lighthouse', page 1": dict(search="lighthouse"),
    "preset filter, page 1": dict(preset="wikiart_16384"),
    "last day + search 'cat'": dict(search="cat", since=time.time() - 86400),
}


def time_queries(store, repeat: int, n: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name, kwargs in QUERIES.items():
        if kwargs.get("offset") == "middle":
            kwargs = {**kwargs, "offset": n // 24 // 2 * 24}
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            items, total = store.gallery(limit=24, **kwargs)
            samples.append((time.perf_counter() - start) * 1000)
            assert items and total
        samples.sort()
        out[name] = (statistics.median(samples), samples[int(0.95 * (len(samples) - 1))])
    return out


@contextmanager
def backend(name: str, admin_url: str):
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/gallery.db"
        return
    from t2i.store.postgres import temporary_database

    with temporary_database(admin_url, "t2i_gallery_") as url:
        yield url


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--pg-admin-url", default=PG_ADMIN)
    args = ap.parse_args(argv)
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{datetime.now():%Y-%m-%d %H:%M}")
    print(f"Command: `python scripts/bench_gallery.py {' '.join(argv or sys.argv[1:])}`".rstrip() + "\n")
    print("| backend | query | median ms | p95 ms |\n| --- | --- | --- | --- |")
    for name in ["sqlite"] + ([] if args.no_pg else ["postgresql"]):
        with backend(name, args.pg_admin_url) as url:
            store = open_store(url)
            try:
                start = time.perf_counter()
                seed(store, args.results, random.Random(0))
                seeded = time.perf_counter() - start
                for query, (p50, p95) in time_queries(store, args.repeat, args.results).items():
                    print(f"| {name} | {query} | {p50:.1f} | {p95:.1f} |")
                print(f"| {name} | (seeding {args.results} results) | {seeded:.0f} s total | |")
            finally:
                store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
