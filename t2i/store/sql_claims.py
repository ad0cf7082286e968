"""The claim's SQL and its order (SQLStore.claim_many, t2i/store/sql.py): which queued jobs an executor
takes next. Plain strings, for both backends; the backend adds its row lock (CLAIM_LOCK).

The order is fair across submitters: priority first (the operator's), then the submitter whose latest
start is oldest (TURN: a submitter with nothing started yet comes first), then age. A submitter is its
client address (the shell's jobs, which have none, are one submitter): visitor ids cost nothing to
replace, addresses do. So an address that queued ten long jobs gets one of them, then another
address's job goes next, then its second one: it cannot hold an executor while others wait.
"""

from __future__ import annotations

from .base import ALONE

WHO = "COALESCE(address, '')"
# The submitter's latest start, -1 when none: one probe of the jobs_turn index per queued job looked at
# (a claim looks at every queued job of its priority: BENCHMARKS.md, "Claims that take turns").
TURN = ("COALESCE((SELECT MAX(t.started_at) FROM jobs t WHERE COALESCE(t.address, '') = COALESCE(jobs.address, '')), "
        "-1)")
ORDER = f"ORDER BY priority DESC, {TURN}, id"


# One UPDATE of the rows a SELECT picks, locked with `lock` so that concurrent claimers skip each
# other's rows instead of waiting: one round trip, whatever n. Without a batch key the head job (the
# first in ORDER that this worker may take) decides the key and up to n - 1 others of that key follow,
# unless the head is alone; the followers are other submitters' first (in their turn), then the head's
# submitter's. The head itself is picked with the lock, so concurrent claimers each start from a
# different head instead of all but one coming back empty. The picks are MATERIALIZED: as a subquery
# of `id IN (...)`, PostgreSQL may run a locking SELECT once per candidate row, and each run may lock
# another row (it took 3 for n = 1).
def claim_sql(worker_id: str, lease_seconds: float, n: int, batch_key: str | None, lock: str,
              columns: str) -> tuple[str, tuple]:
    # A job marked alone (see sweep) starts only on a worker that runs nothing, and nothing joins it.
    mine = "SELECT 1 FROM jobs r WHERE r.status = 'running' AND r.worker_id = ?"
    alone = ALONE + "%"
    if batch_key is not None:
        picks = (f"pick AS MATERIALIZED (SELECT id FROM jobs WHERE status = 'queued' AND batch_key = ? AND "
                 f"NOT EXISTS ({mine} AND r.batch_key LIKE ?) {ORDER} LIMIT ?{lock})")
        params = (batch_key, worker_id, alone, 1 if batch_key.startswith(ALONE) else n)
        chosen = "SELECT id FROM pick"
    else:
        picks = (f"head AS MATERIALIZED (SELECT id, batch_key, {WHO} AS who FROM jobs WHERE status = 'queued' AND "
                 f"(batch_key NOT LIKE ? OR NOT EXISTS ({mine})) {ORDER} LIMIT ?{lock})")
        params = (alone, worker_id, 1)
        chosen = "SELECT id FROM head"
        if n > 1:  # an alone head's key matches no other job (`NOT LIKE`): it is taken by itself
            picks += (f", more AS MATERIALIZED (SELECT id FROM jobs WHERE status = 'queued' AND batch_key = "
                      f"(SELECT batch_key FROM head) AND batch_key NOT LIKE ? AND id <> (SELECT id FROM head) "
                      f"ORDER BY priority DESC, CASE WHEN {WHO} = (SELECT who FROM head) THEN 1 ELSE 0 END, "
                      f"{TURN}, id LIMIT ?{lock})")
            params += (alone, n - 1)
            chosen += " UNION ALL SELECT id FROM more"
    sql = (f"WITH {picks} UPDATE jobs SET status = 'running', worker_id = ?, attempts = attempts + 1, step = 0, "
           "loss = NULL, lease_expires_at = {now} + ?, heartbeat_at = {now}, started_at = {now} "
           f"WHERE id IN ({chosen}) AND status = 'queued' RETURNING {columns}")
    return sql, (*params, worker_id, lease_seconds)
