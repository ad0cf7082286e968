"""What live event streams poll: the state of many jobs in one statement. A mixin of SQLStore
(t2i/store/sql.py), which gives it the statement helpers. t2i/api/events.py asks for every job its
process's streams follow once per poll, so 200 streams cost one query a poll, not 200."""

from __future__ import annotations

from dataclasses import dataclass

CHUNK = 500   # ids per statement: far below SQLite's 32766 bound on parameters


@dataclass(frozen=True)
class Watched:
    """A job's state as a stream needs it to see a change: no spec, no image bytes."""

    id: int
    status: str
    attempts: int
    step: int
    position: int | None      # its place by priority and age when queued (queue_position's count)
    frame_step: int | None    # the step of its newest progress frame


class Watching:
    def watch(self, job_ids) -> dict[int, Watched]:
        """The jobs among job_ids that exist, by id (one statement per CHUNK ids)."""
        ids = sorted(set(job_ids))
        found = {}
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            rows = self._all(
                "SELECT j.id, j.status, j.attempts, j.step, CASE WHEN j.status = 'queued' THEN "
                "(SELECT COUNT(*) FROM jobs q WHERE q.status = 'queued' AND (q.priority > j.priority OR "
                "(q.priority = j.priority AND q.id < j.id))) + 1 END, "
                "(SELECT MAX(f.step) FROM frames f WHERE f.job_id = j.id) "
                f"FROM jobs j WHERE j.id IN ({', '.join('?' * len(part))})", tuple(part))
            for r in rows:
                found[int(r[0])] = Watched(int(r[0]), r[1], int(r[2]), int(r[3]),
                                           None if r[4] is None else int(r[4]), None if r[5] is None else int(r[5]))
        return found
