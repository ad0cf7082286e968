"""Table definitions and forward migrations: one schema, rendered in each backend's types.
Version N's script takes the schema from version N-1; stores apply the ones they lack on open.

Images live in the database (one URL is all a host needs): frames while a job runs, then the GIF,
the final PNG and a small thumbnail. Uploaded images are rows of their own, once per content (version 5),
never inside a job's spec. Indexes cover what pages filter and sort on.
"""

_VERSIONS = [
    # version 1
    """
    CREATE TABLE jobs (
        id {ID},
        spec TEXT NOT NULL,
        prompt TEXT NOT NULL,
        preset TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        priority INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        worker_id TEXT,
        lease_expires_at {REAL},
        heartbeat_at {REAL},
        step INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL,
        loss {REAL},
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        submitter TEXT,
        retry_of {BIGINT} REFERENCES jobs(id),
        created_at {REAL} NOT NULL,
        started_at {REAL},
        finished_at {REAL}
    );
    CREATE INDEX jobs_queue ON jobs (status, priority DESC, id);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_preset ON jobs (preset, created_at);
    CREATE INDEX jobs_submitter ON jobs (submitter, created_at);
    CREATE INDEX jobs_prompt ON jobs (prompt);
    CREATE TABLE frames (
        job_id {BIGINT} NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        png {BLOB} NOT NULL,
        PRIMARY KEY (job_id, step)
    );
    CREATE TABLE results (
        job_id {BIGINT} PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        gif {BLOB} NOT NULL,
        png {BLOB} NOT NULL,
        thumbnail {BLOB} NOT NULL,
        parameters TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        seed TEXT NOT NULL,
        created_at {REAL} NOT NULL
    );
    CREATE INDEX results_created ON results (created_at);
    CREATE TABLE votes (
        id {ID},
        voter TEXT NOT NULL,
        left_job {BIGINT} NOT NULL REFERENCES jobs(id),
        right_job {BIGINT} NOT NULL REFERENCES jobs(id),
        job_lo {BIGINT} NOT NULL,
        job_hi {BIGINT} NOT NULL,
        choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
        created_at {REAL} NOT NULL,
        UNIQUE (voter, job_lo, job_hi)
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        device TEXT NOT NULL,
        job_id {BIGINT},
        started_at {REAL} NOT NULL,
        seen_at {REAL} NOT NULL
    );
    """,
    # version 2: per-image vote tallies kept beside the result, so "most preferred" sorts without
    # aggregating the votes table on every gallery page
    """
    ALTER TABLE results ADD COLUMN wins {REAL} NOT NULL DEFAULT 0;
    ALTER TABLE results ADD COLUMN appearances INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX votes_voter ON votes (voter);
    CREATE INDEX jobs_status_created ON jobs (status, created_at);
    CREATE INDEX jobs_status_id ON jobs (status, id);
    """,
    # version 3: executors batch compatible jobs (same preset, size and cutouts) and claim by this key
    """
    ALTER TABLE jobs ADD COLUMN batch_key TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_batch ON jobs (status, batch_key, priority DESC, id);
    """,
    # version 4: public limits bind to the client address (t2i/web/visitor.py), not to the visitor id,
    # which a visitor can rotate for free; NULL for jobs and votes from the shell or from before
    """
    ALTER TABLE jobs ADD COLUMN address TEXT;
    ALTER TABLE votes ADD COLUMN address TEXT;
    CREATE INDEX jobs_address ON jobs (address, created_at);
    CREATE INDEX votes_address_pair ON votes (address, job_lo, job_hi);
    CREATE INDEX votes_address_created ON votes (address, created_at);
    """,
    # version 5: uploaded images stored once by their SHA-256, outside the job rows (t2i/store/uploads.py);
    # specs refer to them. Then, in the same transaction, AFTER[5] moves the base64 images of older specs here.
    """
    CREATE TABLE uploads (
        sha256 TEXT PRIMARY KEY,
        data {BLOB} NOT NULL,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        created_at {REAL} NOT NULL,
        submitter TEXT,
        address TEXT
    );
    CREATE TABLE job_uploads (
        job_id {BIGINT} NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        sha256 TEXT NOT NULL REFERENCES uploads(sha256),
        PRIMARY KEY (job_id, sha256)
    );
    CREATE INDEX job_uploads_sha256 ON job_uploads (sha256);
    """,
    # version 6: "compare presets" submits one prompt to several presets as a group (t2i/service/compare.py);
    # every job of a group carries the id of its first job, so pages find the group's results together
    """
    ALTER TABLE jobs ADD COLUMN group_id {BIGINT};
    CREATE INDEX jobs_group ON jobs (group_id);
    """,
    # version 7: claims take turns across submitters (t2i/store/sql_claims.py): each submitter's latest
    # start is one probe of this index
    """
    CREATE INDEX jobs_turn ON jobs ((COALESCE(address, '')), started_at);
    """,
    # version 8: API keys (t2i/store/sql_keys.py): the operator's named keys, kept as hashes; a live
    # (unrevoked) name is unique, a revoked key's row stays so that its jobs' submitter still means it
    """
    CREATE TABLE api_keys (
        id {ID},
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at {REAL} NOT NULL,
        revoked_at {REAL}
    );
    CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
    """,
    # version 9: frames, results and uploads may live in a BlobStore ($T2I_BLOBS, t2i/store/sql_blobs.py):
    # the row keeps the blob's ref and an empty value in the bytes' column; rows with bytes read as before
    """
    ALTER TABLE frames ADD COLUMN ref TEXT;
    ALTER TABLE results ADD COLUMN gif_ref TEXT;
    ALTER TABLE results ADD COLUMN png_ref TEXT;
    ALTER TABLE uploads ADD COLUMN ref TEXT;
    """,
]

# Steps that need more than SQL, run right after a version's script in its transaction: the name of
# the SQLStore method that does it (t2i/store/sql_upgrade.py: a row it cannot read is marked and named
# in the log, and the upgrade goes on).
AFTER = {5: "_uploads_from_specs"}

_TYPES = {
    "sqlite": dict(ID="INTEGER PRIMARY KEY AUTOINCREMENT", BIGINT="INTEGER", REAL="REAL", BLOB="BLOB"),
    "postgres": dict(ID="BIGSERIAL PRIMARY KEY", BIGINT="BIGINT", REAL="DOUBLE PRECISION", BLOB="BYTEA"),
}


def scripts(backend: str) -> list[str]:
    """The migration scripts, version 1 first, in the backend's types."""
    return [v.format(**_TYPES[backend]) for v in _VERSIONS]


SQLITE = scripts("sqlite")
POSTGRES = scripts("postgres")
