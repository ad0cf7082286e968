"""A compare group as its page shows it: one prompt and seed on 2 to 4 presets (queue.submit_group),
labelled A-D, presets hidden until the visitor votes on the group; the vote feeds the leaderboard.

Torch-free, kept out of the pages for tests:

    view(store, voter, group_id)     the columns (label, job, progress), may the visitor vote, are the presets shown
    vote_group(store, voter, ...)    "this one is the best" (or "all bad") as pairwise votes through ranking.cast_vote
    blind_groups(store, voter, ids)  which groups' presets the other pages (Queue, gallery) must hide from voter
    pixels_only(png)                 a result's image without its `parameters` text, for showing before the vote

Blind means blind everywhere a voter can look: the labels do not follow the job ids (which the Queue
page and the gallery show), the presets of a group's jobs are hidden on every page until the visitor
has voted on the group, and the image a page serves carries no text naming them.

"Pick the best" of n images says the best beat each of the others and nothing about the others among
themselves, so it is recorded as the n - 1 pairs best-vs-other ("left" wins): the Bradley-Terry fit
and the per-image tallies read them like any vote, and the vote limits (one vote per pair from an
address, votes a minute) hold for each. "All bad" is a both_bad vote on every pair: the fit ignores
it (it ranks nothing), the images' tallies count the appearances.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import jobview
from ..output.render import PNG_SIGNATURE, TEXT_CHUNKS, png_chunks
from .ranking import VoteLimit, VotePolicy, cast_vote
from ..store import FINISHED, Job

LABELS = "ABCD"
HIDDEN = "hidden until you vote"   # what pages show for a blind group's preset


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
    return _voted(store.voted_pairs(voter), job_ids)


def _voted(pairs: set[tuple[int, int]], job_ids) -> bool:
    ids = set(job_ids)
    return any(lo in ids and hi in ids for lo, hi in pairs)


def _revealed(jobs: list[Job], pairs: set[tuple[int, int]]) -> bool:
    # Hidden presets wait for a vote; once no vote can come (fewer than two images and nothing left
    # to run), hiding them would only keep them secret for ever.
    active = any(j.status not in FINISHED for j in jobs)
    return _voted(pairs, [j.id for j in jobs]) or (not active and sum(j.status == "done" for j in jobs) < 2)


def labelled(jobs: list[Job]) -> list[tuple[str, Job]]:
    """The group's jobs with their labels, A first. Not in id order: the Queue page and the gallery show
    ids, and ids follow the insertion order, so labels in id order would tie each label to a row there
    (and to the submitter's own order, were it ever inserted unshuffled). A shuffle seeded by the group
    (its id and the first job's insertion time to the microsecond, which no page shows) gives every
    rerun and every visitor the same labels."""
    order = sorted(jobs, key=lambda j: j.id)
    random.Random(f"t2i-compare:{order[0].id}:{order[0].created_at!r}").shuffle(order)
    return list(zip(LABELS, order))


def view(store, voter: str, group_id: int, now: float | None = None) -> GroupView | None:
    """The group as `voter` sees it now; None for an unknown group."""
    jobs = store.group(group_id)
    if not jobs:
        return None
    columns = [Column(label, job, jobview.progress(job, now)) for label, job in labelled(jobs)]
    active = any(j.status not in FINISHED for j in jobs)
    done = sum(j.status == "done" for j in jobs)
    pairs = store.voted_pairs(voter)
    return GroupView(prompt=jobs[0].prompt, seed=jobs[0].spec.get("seed"), columns=columns, active=active,
                     can_vote=done >= 2 and not _voted(pairs, [j.id for j in jobs]),
                     revealed=_revealed(jobs, pairs))


def blind_groups(store, voter: str, group_ids) -> set[int]:
    """Those of group_ids (None ones skipped) whose presets stay hidden from voter on every page: the
    compare view's rule (until the voter votes on the group, while a vote is still possible). One
    query per group: the pages ask for the groups of one page of rows."""
    pairs = store.voted_pairs(voter)
    return {g for g in set(group_ids) - {None} if (jobs := store.group(g)) and not _revealed(jobs, pairs)}


def blind_text(text: str | None, preset: str) -> str | None:
    """A job's text (its error) with the preset's name taken out, for a blind group's row."""
    return text.replace(preset, "(the preset)") if text and preset else text


def pixels_only(png: bytes) -> bytes:
    """The image without its text chunks. A result's PNG carries a `parameters` chunk naming the preset
    and the model, and st.image serves PNG bytes as they are: a visitor who saved the image before the
    vote could read which preset made it. The chunks are dropped, not the image re-encoded: the view
    refreshes every second while a group runs, and encoding a 1024x1024 image took about 0.5 s."""
    if not png.startswith(PNG_SIGNATURE):
        return png   # results are PNGs (t2i/output/render.py); anything else holds no PNG text chunk
    # A file cut short ends at its last whole chunk: what follows could be text, and the page must not fail.
    kept = [PNG_SIGNATURE] + [png[pos:pos + 12 + length] for kind, pos, length in png_chunks(png)
                              if kind not in TEXT_CHUNKS]
    return b"".join(kept)


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
