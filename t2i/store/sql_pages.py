"""What the pages read from the JobStore in SQL: the gallery, votes and their tallies, the pairs and
groups to vote on, and the executors' records (worker_seen, workers). A mixin of SQLStore (t2i/store/sql.py), which gives it `_one`, `_all`, `_execute`
and the backend's `LIKE`."""

from __future__ import annotations


class PageQueries:
    # --- gallery ----------------------------------------------------------------------------
    GALLERY_SORTS = {"newest": "j.id DESC",
                     # Laplace-smoothed win rate: one lucky vote does not top the gallery.
                     "preferred": "(COALESCE(r.wins, 0) + 1.0) / (COALESCE(r.appearances, 0) + 2.0) DESC, j.id DESC"}

    def gallery(self, *, search: str | None = None, preset: str | None = None, status: str | None = "done",
                since: float | None = None, sort: str = "newest", limit: int = 24, offset: int = 0,
                presets: list[str] | None = None) -> tuple[list[dict], int]:
        """One page of jobs with their thumbnails (never the GIF or full PNG), and the total matching."""
        where, params = [], []
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(f"j.prompt {self.LIKE} ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        for column, value in (("j.preset", preset), ("j.status", status)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if presets is not None:  # a family's presets; none of them: nothing matches
            where.append(f"j.preset IN ({', '.join('?' * len(presets))})" if presets else "1 = 0")
            params.extend(presets)
        if since is not None:
            where.append("j.created_at >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        join = "JOIN" if status == "done" else "LEFT JOIN"
        total = int(self._one(f"SELECT COUNT(*) FROM jobs j {join} results r ON r.job_id = j.id {clause}",
                              tuple(params))[0])
        # Page through light columns only; the thumbnails of the one page are fetched afterwards, so
        # no BLOB is carried through the sort.
        rows = self._all(
            "SELECT j.id, j.prompt, j.preset, j.status, j.created_at, j.finished_at, j.error, "
            f"COALESCE(r.wins, 0), COALESCE(r.appearances, 0), j.group_id FROM jobs j {join} results r ON r.job_id = j.id "
            f"{clause} ORDER BY {self.GALLERY_SORTS[sort]} LIMIT ? OFFSET ?", (*params, limit, offset))
        keys = ("id", "prompt", "preset", "status", "created_at", "finished_at", "error", "wins", "appearances",
                "group_id")
        items = [dict(zip(keys, r)) for r in rows]
        thumbs = {}
        if items:
            marks = ", ".join("?" * len(items))
            thumbs = dict(self._all(f"SELECT job_id, thumbnail FROM results WHERE job_id IN ({marks})",
                                    tuple(i["id"] for i in items)))
        for item in items:
            thumb = thumbs.get(item["id"])
            item["thumbnail"] = bytes(thumb) if thumb is not None else None
        return items, total

    def presets_in_use(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT preset FROM jobs ORDER BY preset")]

    # --- votes ------------------------------------------------------------------------------
    def vote(self, voter: str, left_job: int, right_job: int, choice: str) -> bool:
        """Record one vote on a pair of finished jobs; False when this voter already voted on the pair."""
        lo, hi = sorted((left_job, right_job))
        if lo == hi:
            raise ValueError("a vote needs two different images")
        with self.transaction():
            finished = self._one("SELECT COUNT(*) FROM results WHERE job_id IN (?, ?)", (lo, hi))[0]
            if finished != 2:
                raise ValueError(f"jobs {lo} and {hi} are not both finished images")
            inserted = self._rowcount(
                "INSERT INTO votes (voter, left_job, right_job, job_lo, job_hi, choice, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, {now}) ON CONFLICT (voter, job_lo, job_hi) DO NOTHING",
                (voter, left_job, right_job, lo, hi, choice))
            if inserted != 1:
                return False
            credit = {"left": (1.0, 0.0), "right": (0.0, 1.0), "tie": (0.5, 0.5), "both_bad": (0.0, 0.0)}[choice]
            for job, win in zip((left_job, right_job), credit):
                self._execute("UPDATE results SET wins = wins + ?, appearances = appearances + 1 WHERE job_id = ?",
                              (win, job))
        return True

    def voted_pairs(self, voter: str) -> set[tuple[int, int]]:
        return {(int(a), int(b)) for a, b in self._all("SELECT job_lo, job_hi FROM votes WHERE voter = ?", (voter,))}

    def vote_records(self) -> list[dict]:
        """Every vote with the presets of both sides and its address (for the leaderboard fit)."""
        rows = self._all(
            "SELECT v.left_job, v.right_job, l.preset, r.preset, v.choice, v.address FROM votes v "
            "JOIN jobs l ON l.id = v.left_job JOIN jobs r ON r.id = v.right_job ORDER BY v.id")
        return [dict(zip(("left_job", "right_job", "left_preset", "right_preset", "choice", "address"), r))
                for r in rows]

    def prompts_with_results(self, min_results: int = 2, limit: int = 20) -> list[str]:
        """Random prompts that have at least min_results finished images (for same-prompt pairs)."""
        return [r[0] for r in self._all(
            "SELECT prompt FROM jobs WHERE status = 'done' GROUP BY prompt HAVING COUNT(*) >= ? "
            "ORDER BY random() LIMIT ?", (min_results, limit))]

    def done_jobs(self, *, prompt: str | None = None, group: int | None = None, limit: int = 50) -> list[int]:
        """Random finished job ids, optionally for one prompt or one group."""
        where, params = "", ()
        if prompt is not None:
            where, params = " AND prompt = ?", (prompt,)
        if group is not None:
            where, params = where + " AND group_id = ?", (*params, group)
        return [int(r[0]) for r in self._all(f"SELECT id FROM jobs WHERE status = 'done'{where} ORDER BY random() LIMIT ?",
                                             (*params, limit))]

    def done_groups(self, min_results: int = 2, limit: int = 20) -> list[int]:
        """Random groups that have at least min_results finished images (for same-group pairs)."""
        return [int(r[0]) for r in self._all(
            "SELECT group_id FROM jobs WHERE status = 'done' AND group_id IS NOT NULL GROUP BY group_id "
            "HAVING COUNT(*) >= ? ORDER BY random() LIMIT ?", (min_results, limit))]

    # --- executors --------------------------------------------------------------------------
    def worker_seen(self, worker_id: str, *, host: str, device: str, job_id: int | None) -> None:
        self._execute(
            "INSERT INTO workers (id, host, device, job_id, started_at, seen_at) VALUES (?, ?, ?, ?, {now}, {now}) "
            "ON CONFLICT (id) DO UPDATE SET job_id = excluded.job_id, seen_at = excluded.seen_at",
            (worker_id, host, device, job_id))

    def workers(self, seen_within: float = 60.0) -> list[dict]:
        rows = self._all("SELECT id, host, device, job_id, started_at, seen_at FROM workers "
                         "WHERE seen_at > {now} - ? ORDER BY id", (seen_within,))
        return [dict(zip(("id", "host", "device", "job_id", "started_at", "seen_at"), r)) for r in rows]
