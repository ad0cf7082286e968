"""A compare group as its page shows it: one prompt and seed on 2 to 4 presets (queue.submit_group),
labelled A-D, presets hidden until the visitor votes on the group; the vote feeds the leaderboard.

Torch-free, kept out of the pages for tests:

    view(store, voter, group_id)     the columns (label, job, progress), may the visitor vote, are the presets shown
    vote_group(store, voter, ...)    "this one is the best" (or "all bad") as pairwise votes through ranking.cast_vote

"Pick the best" of n images says the best beat each of the others and nothing about the others among
themselves, so it is recorded as the n - 1 pairs best-vs-other ("left" wins): the Bradley-Terry fit
and the per-image tallies read them like any vote, and the vote limits (one vote per pair from an
address, votes a minute) hold for each. "All bad" is a both_bad vote on every pair: the fit ignores
it (it ranks nothing), the images' tallies count the appearances.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import jobview
from .ranking import VoteLimit, VotePolicy, cast_vote
from ..store import FINISHED, Job

LABELS = "ABCD"   # the group's jobs in its (random) submission order: queue.submit_group shuffles it


@dataclass
class Column:
    label: str
    job: Job
    progress: jobview.JobProgress


@dataclass
class GroupView:
    prompt: str
    seed: int | None
    columns: list[Column]
    active: bool       # a job is queued or running: the view refreshes itself
    can_vote: bool     # two or more images are finished and this visitor has not voted on the group
    revealed: bool     # the presets are shown: the visitor voted, or no vote will ever be possible

    @property
    def done(self) -> list[Column]:
        return [c for c in self.columns if c.job.status == "done"]


@dataclass
class GroupVote:
    recorded: int          # votes recorded now
    already: int           # pairs this visitor had voted on before (their first vote stands)
    limit: str | None      # VoteLimit's line when the address reached a limit part way (or at once)


def voted(store, voter: str, job_ids) -> bool:
    """Whether this voter has voted on any pair of these jobs (then the group's presets are shown)."""
    ids = set(job_ids)
    return any(lo in ids and hi in ids for lo, hi in store.voted_pairs(voter))


def view(store, voter: str, group_id: int, now: float | None = None) -> GroupView | None:
    """The group as `voter` sees it now; None for an unknown group."""
    jobs = store.group(group_id)
    if not jobs:
        return None
    columns = [Column(label, job, jobview.progress(job, now)) for label, job in zip(LABELS, jobs)]
    active = any(j.status not in FINISHED for j in jobs)
    done = sum(j.status == "done" for j in jobs)
    has_voted = voted(store, voter, [j.id for j in jobs])
    # Hidden presets wait for a vote; once no vote can come (fewer than two images and nothing left
    # to run), hiding them would only keep them secret for ever.
    revealed = has_voted or (not active and done < 2)
    return GroupView(prompt=jobs[0].prompt, seed=jobs[0].spec.get("seed"), columns=columns, active=active,
                     can_vote=done >= 2 and not has_voted, revealed=revealed)


def vote_group(store, voter: str, address: str, group_jobs: list[Job], best_job_id: int | None,
               policy: VotePolicy) -> GroupVote:
    """The visitor's verdict on the group's finished images: best_job_id beat each other finished one,
    or None for "all bad" (both_bad on every pair). Each pair goes through ranking.cast_vote, so the
    vote limits hold per pair; a limit reached part way stops there (the votes before it stand).
    ValueError when best_job_id is not a finished image of the group, or fewer than two are finished."""
    done = [j.id for j in group_jobs if j.status == "done"]
    if len(done) < 2:
        raise ValueError("a group vote needs two finished images")
    if best_job_id is None:
        pairs = [(a, b, "both_bad") for k, a in enumerate(done) for b in done[k + 1:]]
    elif best_job_id in done:
        pairs = [(best_job_id, other, "left") for other in done if other != best_job_id]
    else:
        raise ValueError(f"job {best_job_id} is not a finished image of this group")
    outcome = GroupVote(recorded=0, already=0, limit=None)
    for left, right, choice in pairs:
        try:
            if cast_vote(store, voter, address, left, right, choice, policy):
                outcome.recorded += 1
            else:
                outcome.already += 1
        except VoteLimit as limit:
            outcome.limit = str(limit)
            break
    return outcome
