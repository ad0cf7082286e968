"""Table definitions and forward migrations, per backend. Version N's script takes the schema from N-1.

Images live in the database (one URL is all a host needs): frames while a job runs, then the GIF,
the final PNG and a small thumbnail. Indexes cover what pages filter and sort on.
"""

SQLITE = [
    # version 1
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        spec TEXT NOT NULL,
        prompt TEXT NOT NULL,
        preset TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        priority INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        worker_id TEXT,
        lease_expires_at REAL,
        heartbeat_at REAL,
        step INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL,
        loss REAL,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        submitter TEXT,
        retry_of INTEGER REFERENCES jobs(id),
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_queue ON jobs (status, priority DESC, id);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_preset ON jobs (preset, created_at);
    CREATE INDEX jobs_submitter ON jobs (submitter, created_at);
    CREATE INDEX jobs_prompt ON jobs (prompt);
    CREATE TABLE frames (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        png BLOB NOT NULL,
        PRIMARY KEY (job_id, step)
    );
    CREATE TABLE results (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        gif BLOB NOT NULL,
        png BLOB NOT NULL,
        thumbnail BLOB NOT NULL,
        parameters TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        seed TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX results_created ON results (created_at);
    CREATE TABLE votes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        voter TEXT NOT NULL,
        left_job INTEGER NOT NULL REFERENCES jobs(id),
        right_job INTEGER NOT NULL REFERENCES jobs(id),
        job_lo INTEGER NOT NULL,
        job_hi INTEGER NOT NULL,
        choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
        created_at REAL NOT NULL,
        UNIQUE (voter, job_lo, job_hi)
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        device TEXT NOT NULL,
        job_id INTEGER,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL
    );
    """,
    # version 2: per-image vote tallies kept beside the result, so "most preferred" sorts without
    # aggregating the votes table on every gallery page
    """
    ALTER TABLE results ADD COLUMN wins REAL NOT NULL DEFAULT 0;
    ALTER TABLE results ADD COLUMN appearances INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX votes_voter ON votes (voter);
    CREATE INDEX jobs_status_created ON jobs (status, created_at);
    CREATE INDEX jobs_status_id ON jobs (status, id);
    """,
]

POSTGRES = [
    # version 1
    """
    CREATE TABLE jobs (
        id BIGSERIAL PRIMARY KEY,
        spec TEXT NOT NULL,
        prompt TEXT NOT NULL,
        preset TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        priority INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        worker_id TEXT,
        lease_expires_at DOUBLE PRECISION,
        heartbeat_at DOUBLE PRECISION,
        step INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL,
        loss DOUBLE PRECISION,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        submitter TEXT,
        retry_of BIGINT REFERENCES jobs(id),
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION
    );
    CREATE INDEX jobs_queue ON jobs (status, priority DESC, id);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_preset ON jobs (preset, created_at);
    CREATE INDEX jobs_submitter ON jobs (submitter, created_at);
    CREATE INDEX jobs_prompt ON jobs (prompt);
    CREATE TABLE frames (
        job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        png BYTEA NOT NULL,
        PRIMARY KEY (job_id, step)
    );
    CREATE TABLE results (
        job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        gif BYTEA NOT NULL,
        png BYTEA NOT NULL,
        thumbnail BYTEA NOT NULL,
        parameters TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        seed TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX results_created ON results (created_at);
    CREATE TABLE votes (
        id BIGSERIAL PRIMARY KEY,
        voter TEXT NOT NULL,
        left_job BIGINT NOT NULL REFERENCES jobs(id),
        right_job BIGINT NOT NULL REFERENCES jobs(id),
        job_lo BIGINT NOT NULL,
        job_hi BIGINT NOT NULL,
        choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (voter, job_lo, job_hi)
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        device TEXT NOT NULL,
        job_id BIGINT,
        started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL
    );
    """,
    # version 2: per-image vote tallies kept beside the result, so "most preferred" sorts without
    # aggregating the votes table on every gallery page
    """
    ALTER TABLE results ADD COLUMN wins REAL NOT NULL DEFAULT 0;
    ALTER TABLE results ADD COLUMN appearances INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX votes_voter ON votes (voter);
    CREATE INDEX jobs_status_created ON jobs (status, created_at);
    CREATE INDEX jobs_status_id ON jobs (status, id);
    """,
]

