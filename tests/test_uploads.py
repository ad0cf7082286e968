"""Uploads outside the job rows (t2i/store/uploads.py), on both backends: each image is stored once by
its SHA-256 in the submission's transaction, specs refer to it, listings never load it, retries use
it again, the per-address storage quota counts it once, and a version-4 database's inline images
move into the table when it is opened."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sqlite3
import threading

import numpy as np
import pytest
from PIL import Image

from t2i.service.queue import QueueLimit, SubmitPolicy, submit_job
from t2i.spec import JobSpec, SpecError, make_spec
from t2i.store import open_store
from t2i.store.schema import POSTGRES, SQLITE
from t2i.store.uploads import UploadRef

PRESET = "tiny-vqgan-untrained"
THREADS = 12


def noise_png(side: int, seed: int) -> bytes:
    """Random pixels: a PNG about as large as its raw pixels, whatever the compressor does."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def big():
    """Two images of about 9.7 MB each (the limit is 10 MB)."""
    return noise_png(1800, 1), noise_png(1800, 2)


def rows(store, table: str) -> int:
    return int(store._one(f"SELECT COUNT(*) FROM {table}")[0])


def database_bytes(store) -> int:
    if hasattr(store, "path"):  # SQLite: the file and its write-ahead log
        return sum(os.path.getsize(p) for p in (store.path, store.path + "-wal") if os.path.exists(p))
    return int(store._one("SELECT pg_database_size(current_database())")[0])


def largest_field(jobs) -> int:
    return max(len(json.dumps(value, default=str)) for job in jobs for value in vars(job).values())


# --- stored once, never listed --------------------------------------------------------------

def test_twenty_jobs_with_the_same_two_large_images_store_them_once_and_list_without_them(store, big):
    """Inline, 20 such jobs made a 495 MB database and a 20-job listing read 1.1 GB."""
    init, prompt = big
    assert 9_500_000 < len(init) < 10 * 2**20  # "9.7 MB", under the 10 MiB limit
    ids = [submit_job(store, f"a fox {i}", PRESET, iterations=1, submitter="alice", init_image=init,
                      image_prompts=[prompt]) for i in range(20)]
    assert rows(store, "uploads") == 2 and rows(store, "job_uploads") == 40
    assert database_bytes(store) < 60 * 2**20
    # The listings behind the Queue page, `t2i jobs` and "your recent jobs": no field near an image's size.
    for listing in (store.jobs(limit=20), store.jobs(submitter="alice", limit=20), store.jobs(status="queued")):
        assert [j.id for j in listing] == ids[::-1]
        assert largest_field(listing) < 4096
    items, total = store.gallery(status=None, limit=20)
    assert total == 20 and max(len(json.dumps(i, default=str)) for i in items) < 4096
    # The job refers to its images; the executor loads them by hash.
    job = store.get(ids[0])
    assert job.spec["init_image"] == {"upload": sha(init)} and job.spec["image_prompts"] == [{"upload": sha(prompt)}]
    spec = JobSpec.from_dict(job.spec, load=store.upload)
    assert spec.init_image == init and spec.image_prompts == (prompt,)


def test_a_spec_read_without_its_images_keeps_their_references():
    """What the sweep and the executor's preset lookup read: enough for the load, no bytes."""
    from t2i.presets import get_preset

    image = noise_png(64, 3)
    d = make_spec("a fox", PRESET, width=64, height=64, cutn=2, init_image=image, image_prompts=[image]).to_dict()
    spec = JobSpec.from_dict(d)
    assert spec.init_image == UploadRef(sha(image)) and spec.image_prompts == (UploadRef(sha(image)),)
    assert spec.to_dict() == d and spec.uploads() == []
    assert "64x64" in spec.options.describe(spec, *spec.options.used_size(spec, get_preset(PRESET)))
    with pytest.raises(SpecError, match="init_image: refers to the upload .* not in the job database"):
        JobSpec.from_dict(d, load=lambda _: None)
    # A spec from before uploads (base64 images) still reads.
    old = {**d, "init_image": base64.b64encode(image).decode(), "image_prompts": [base64.b64encode(image).decode()]}
    spec = JobSpec.from_dict(old)
    assert spec.init_image == image and spec.image_prompts == (image,)


# --- nothing half-written -----------------------------------------------------------------------

def test_a_refused_submission_leaves_no_upload_behind(store):
    x, y, z = noise_png(64, 5), noise_png(64, 6), noise_png(64, 7)
    policy = SubmitPolicy(max_active_per_address=1, max_per_minute=100, max_queued=100)
    submit_job(store, "a fox", PRESET, iterations=1, address="203.0.113.5", policy=policy, init_image=x)
    with pytest.raises(QueueLimit, match="your address already has 1 jobs"):
        submit_job(store, "a fox", PRESET, iterations=1, address="203.0.113.5", policy=policy, init_image=y)
    with pytest.raises(SpecError, match="image_prompt 2"):
        submit_job(store, "a fox", PRESET, iterations=1, init_image=z, image_prompts=[z, b"not an image"])
    tight = SubmitPolicy(max_active_per_address=100, max_per_minute=100, max_queued=100,
                         max_upload_bytes_per_address=len(x) + len(y) // 2)
    with pytest.raises(QueueLimit, match="your address's images of the last 24 hours"):
        submit_job(store, "a fox", PRESET, iterations=1, address="203.0.113.5", policy=tight, init_image=y)
    assert sum(store.counts().values()) == 1
    assert rows(store, "uploads") == 1 and store.upload(sha(x)) == x and store.upload(sha(y)) is None


def test_a_retry_uses_the_same_uploads(store):
    x, y = noise_png(64, 8), noise_png(64, 9)
    first = submit_job(store, "a fox", PRESET, iterations=1, init_image=x, image_prompts=[y, x])
    job = store.claim("w", 300.0)
    assert job.id == first and store.fail(job.lease, "no")
    again = store.retry(first)
    assert store.get(again).spec == store.get(first).spec
    assert rows(store, "uploads") == 2
    assert store._all("SELECT sha256 FROM job_uploads WHERE job_id = ? ORDER BY sha256", (again,)) == \
        store._all("SELECT sha256 FROM job_uploads WHERE job_id = ? ORDER BY sha256", (first,))
    spec = JobSpec.from_dict(store.claim("w", 300.0).spec, load=store.upload)
    assert spec.init_image == x and spec.image_prompts == (y, x)


# --- the per-address storage quota ----------------------------------------------------------------

def test_the_upload_quota_counts_each_image_of_an_address_once_over_its_recent_jobs(store):
    x, y, z = noise_png(64, 10), noise_png(64, 11), noise_png(64, 12)
    limit = len(x) + len(y) + len(z) // 2
    policy = SubmitPolicy(max_active_per_address=100, max_per_minute=100, max_queued=100,
                          max_upload_bytes_per_address=limit)

    def submit(address, image=None, prompts=()):
        return submit_job(store, "a fox", PRESET, iterations=1, address=address, policy=policy, init_image=image,
                          image_prompts=list(prompts))

    keep = submit("203.0.113.5", x)
    submit("203.0.113.5", x, [x])       # the same image again: counted once
    submit("203.0.113.5", y)
    with pytest.raises(QueueLimit, match=f"would pass {limit / 2**20:g} MB"):
        submit("203.0.113.5", z)
    submit("203.0.113.5")               # a job without images adds nothing
    submit("203.0.113.6", z)            # another address has its own quota
    submit_job(store, "a fox", PRESET, iterations=1, init_image=z, image_prompts=[x, y])  # the shell has none
    # A day later: finished jobs no longer count, a job still queued does.
    for job in store.jobs(limit=100):
        if job.id != keep:
            store.cancel(job.id)
    store._execute("UPDATE jobs SET created_at = created_at - 90000")
    submit("203.0.113.5", z)            # x (queued) + z
    with pytest.raises(QueueLimit):
        submit("203.0.113.5", y)        # x + z + y
    assert rows(store, "uploads") == 3


def test_concurrent_uploads_from_one_address_stay_within_its_quota(store_url):
    """Twelve connections, each submitting another image: exactly the quota's worth is accepted."""
    images = [noise_png(64, 100 + i) for i in range(THREADS)]
    policy = SubmitPolicy(max_active_per_address=100, max_per_minute=100, max_queued=500,
                          max_upload_bytes_per_address=int(3.5 * max(map(len, images))))
    stores = [open_store(store_url) for _ in range(THREADS)]
    start, lock = threading.Barrier(THREADS), threading.Lock()
    accepted, refused = [], []

    def run(i):
        start.wait()
        try:
            job = submit_job(stores[i], "a fox", PRESET, iterations=1, address="198.51.100.9", policy=policy,
                             init_image=images[i])
        except QueueLimit:
            with lock:
                refused.append(i)
        else:
            with lock:
                accepted.append(job)

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(accepted) == 3 and len(refused) == THREADS - 3
        assert rows(stores[0], "uploads") == 3 and rows(stores[0], "jobs") == 3
    finally:
        for s in stores:
            s.close()


def test_policy_reads_the_upload_quota_from_the_environment(monkeypatch):
    assert SubmitPolicy().quota.max_upload_bytes == 100 * 2**20
    monkeypatch.setenv("T2I_MAX_UPLOAD_BYTES_PER_ADDRESS", "5000000")
    assert SubmitPolicy.from_env().quota.max_upload_bytes == 5_000_000


# --- the executor resolves references -------------------------------------------------------------

def test_the_executor_runs_a_job_from_its_uploads_and_fails_one_whose_upload_is_missing(store, store_url):
    from t2i.output import render
    from t2i.service.executor import Executor, ExecutorConfig

    init, prompt = noise_png(64, 13), noise_png(64, 14)
    good = submit_job(store, "a fox", PRESET, iterations=1, cutn=2, width=64, height=64, seed=1,
                      init_image=init, image_prompts=[prompt])
    spec = make_spec("a fox", PRESET, iterations=1, cutn=2, width=64, height=64, init_image=noise_png(64, 15))
    lost = store.submit(spec.to_dict(), batch_key="lost", total=1)  # its image was never stored
    ex = Executor(ExecutorConfig(db=store_url, once=True))
    try:
        assert ex.run() == 0
    finally:
        ex.close()
    assert store.get(good).status == "done"
    params = render.read_parameters(store.result(good).png)
    assert params["init_image_sha256"] == sha(init) and params["image_prompts_sha256"] == [sha(prompt)]
    assert store.get(lost).status == "failed"
    assert "init_image: refers to the upload" in store.get(lost).error


# --- a version-4 database -------------------------------------------------------------------------

def _version_4_database(store_url: str, specs: list[dict]) -> None:
    """A database as t2i made it before uploads: version 4's tables, images inline in the specs."""
    insert = ("INSERT INTO jobs (spec, prompt, preset, status, total, submitter, address, created_at) "
              "VALUES ({p}, {p}, {p}, 'queued', 1, 'alice', '203.0.113.5', 0)")
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url[len("sqlite:///"):])
        for script in SQLITE[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 4")
        for spec in specs:
            conn.execute(insert.format(p="?"), (json.dumps(spec), spec["prompt"], spec["preset"]))
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        for script in POSTGRES[:4]:
            conn.execute(script)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (4)")
        for spec in specs:
            conn.execute(insert.format(p="%s"), (json.dumps(spec), spec["prompt"], spec["preset"]))


def test_a_version_4_database_moves_its_inline_images_into_uploads(store_url):
    x, y = noise_png(64, 16), noise_png(64, 17)
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    plain = make_spec("no images", PRESET, width=64, height=64).to_dict()
    with_images = [{**plain, "prompt": "first", "init_image": b64(x), "image_prompts": [b64(y), b64(x)]},
                   {**plain, "prompt": "second", "init_image": b64(x), "image_prompts": []},
                   {"prompt": "a six", "preset": "digits", "family": "diffusion", "steps": 7}]
    _version_4_database(store_url, [*with_images, plain])
    store = open_store(store_url)
    try:
        if hasattr(store, "path"):
            assert store._one("PRAGMA user_version")[0] == len(SQLITE) >= 5
        else:
            assert store._one("SELECT version FROM schema_version")[0] == len(POSTGRES) >= 5
        assert rows(store, "uploads") == 2 and rows(store, "job_uploads") == 3
        first, second, six, none = sorted(store.jobs(), key=lambda j: j.id)
        assert first.spec["init_image"] == {"upload": sha(x)}
        assert first.spec["image_prompts"] == [{"upload": sha(y)}, {"upload": sha(x)}]
        assert second.spec["init_image"] == {"upload": sha(x)} and second.spec["image_prompts"] == []
        assert six.spec == with_images[2] and none.spec == plain
        spec = JobSpec.from_dict(first.spec, load=store.upload)
        assert spec.init_image == x and spec.image_prompts == (y, x)
        # the first uploader is recorded, so the image counts against that address's quota
        assert store._one("SELECT size, media_type, address FROM uploads WHERE sha256 = ?", (sha(x),)) == \
            (len(x), "image/png", "203.0.113.5")
    finally:
        store.close()
    # Opening again migrates nothing more.
    store = open_store(store_url)
    try:
        assert rows(store, "uploads") == 2 and rows(store, "job_uploads") == 3
    finally:
        store.close()
