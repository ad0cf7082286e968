"""Ranking from votes: which pair a voter sees next, and how presets and images rank from the answers.

This module owns the statistics of voting, none of its storage (that is the JobStore's: vote(),
vote_records(), the per-image tallies):

    next_pair(store, voter, rng)     two finished images the voter has not compared yet (same group,
                                     then same prompt, then any)
    cast_vote(store, voter, ...)     a vote within the VotePolicy's limits for the voter's address
    fit_bradley_terry(records)       a preset leaderboard with 95% intervals, from store.vote_records()
    fit_families(records)            the same fit over families (each vote's presets mapped to theirs)
    head_to_head(records)            each preset's win rate against each other preset, as cast
    win_rate(wins, appearances)      the smoothed per-image rate the gallery sorts "preferred" by

The leaderboard is a Bradley-Terry model: preset i beats preset j with probability
sigmoid(theta_i - theta_j). It is shown on an Elo-like scale, 1000 + 400/ln(10) * theta, so that a
200-point gap means the stronger preset wins about 76% of the time, as in chess ratings.

One client address is one ballot per pair of presets: its votes on that pair share a weight of 1
(each of its n votes counts 1/n). Visitor ids cost nothing to make, addresses do; so one address
voting 50 times for a preset moves the fit as much as one vote from a new address, while 50
addresses voting move it as 50 votes.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import numpy as np

from ..errors import PresetError, T2IError
from ..presets import get_preset
from ..store.base import QuotaReached, VoteQuota

ELO_BASE = 1000.0
ELO_PER_THETA = 400.0 / math.log(10.0)   # 400 points = 10:1 odds
Z95 = 1.959963984540054                  # two-sided 95% normal quantile
# A tie is half a win for each side; a both_bad vote says nothing about which one is better.
CREDIT = {"left": (1.0, 0.0), "right": (0.0, 1.0), "tie": (0.5, 0.5)}

GROUP_TRIES = 5          # compare groups tried for a same-group pair (each a query of its few jobs)
SAME_PROMPT_TRIES = 3    # prompts tried for a same-prompt pair before falling back to any two images
SAMPLE = 50              # finished jobs fetched per store call (bounded work, whatever the table size)


@dataclass
class Rating:
    preset: str
    score: float     # Elo-like display score; the mean over listed presets is 1000
    low: float       # 95% interval on the same scale
    high: float
    votes: int       # informative votes (left / right / tie between two different presets)
    wins: float      # wins among them, a tie counting one half
    ballots: float = 0.0   # what the fit counted: each address's votes on a pair of presets weigh 1 together


# --- the fit --------------------------------------------------------------------------------

def _tally(records: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Presets (sorted), W[i, j] = wins of preset i over preset j as the fit counts them (each
    address's votes on a pair of presets weigh 1 together), and the same as cast (one per vote).
    Ties are split in halves. A record without an address (older votes, the shell's) is a ballot of
    its own."""
    presets = sorted({r["left_preset"] for r in records} | {r["right_preset"] for r in records})
    index = {p: i for i, p in enumerate(presets)}
    cast = np.zeros((len(presets), len(presets)))
    ballots: dict[tuple, np.ndarray] = {}   # per ballot: its votes' wins (as cast) and their number
    for k, r in enumerate(records):
        i, j = index[r["left_preset"]], index[r["right_preset"]]
        # Same-preset votes compare a preset with itself; both_bad prefers neither side.
        if i == j or r["choice"] not in CREDIT:
            continue
        left, right = CREDIT[r["choice"]]
        cast[i, j] += left
        cast[j, i] += right
        lo, hi = min(i, j), max(i, j)
        who = r.get("address") or ("record", k)
        ballot = ballots.setdefault((who, lo, hi), np.zeros(3))
        ballot += (left, right, 1.0) if i == lo else (right, left, 1.0)
    wins = np.zeros_like(cast)
    for (_, lo, hi), (lo_wins, hi_wins, n) in ballots.items():
        wins[lo, hi] += lo_wins / n
        wins[hi, lo] += hi_wins / n
    return presets, wins, cast


def _reaches_all(adjacent: np.ndarray) -> bool:
    """Whether every node is reachable from node 0 along adjacent[i, j] > 0 edges."""
    seen, stack = {0}, [0]
    while stack:
        i = stack.pop()
        for j in np.flatnonzero(adjacent[i] > 0):
            if int(j) not in seen:
                seen.add(int(j))
                stack.append(int(j))
    return len(seen) == len(adjacent)


def _check_ml_exists(presets: list[str], wins: np.ndarray) -> None:
    """Without a prior the maximum exists only if the "has beaten" graph is strongly connected
    (Zermelo / Ford): otherwise some group never lost to the rest and its strength runs off to infinity."""
    if len(presets) > 1 and not (_reaches_all(wins) and _reaches_all(wins.T)):
        raise ValueError("maximum likelihood does not exist for these votes (a preset or group of presets is "
                         "undefeated by, or never compared with, the others): fit with a prior_sd")


def _log_posterior(theta: np.ndarray, wins: np.ndarray, precision: float) -> float:
    diff = theta[:, None] - theta[None, :]
    # log sigmoid(d) = -log(1 + e^-d), computed without overflow
    return float(-(wins * np.logaddexp(0.0, -diff)).sum() - 0.5 * precision * theta @ theta)


def _newton(wins: np.ndarray, precision: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximise the log posterior; returns theta (mean 0) and the covariance of the centred theta."""
    n = len(wins)
    games = wins + wins.T
    # Without a prior the likelihood is flat along theta + c; adding the projector onto that
    # direction (ones/n) makes the system solvable without changing the step, which stays orthogonal
    # to it because the gradient always sums to zero. Its inverse is then pinv(information) + ones/n.
    curb = precision * np.eye(n) if precision > 0 else np.full((n, n), 1.0 / n)
    theta = np.zeros(n)
    value = _log_posterior(theta, wins, precision)
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))   # p[i, j]: i beats j
        gradient = (wins - games * p).sum(axis=1) - precision * theta
        weight = games * p * p.T
        information = np.diag(weight.sum(axis=1)) - weight             # minus the likelihood's Hessian
        step = np.linalg.solve(information + curb, gradient)
        # Newton on a concave function may overshoot from far away: halve until it does not go down.
        for _ in range(60):
            candidate = theta + step
            new_value = _log_posterior(candidate, wins, precision)
            if new_value >= value - 1e-12 * abs(value):
                break
            step = step / 2
        theta, value = candidate, new_value
        if np.max(np.abs(step)) < 1e-12:
            break
    p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
    weight = games * p * p.T
    information = np.diag(weight.sum(axis=1)) - weight
    centre = np.eye(n) - 1.0 / n
    # Laplace approximation: the posterior covariance is the inverse of the curvature at the mode;
    # the ratings shown are centred, so their covariance is C Sigma C.
    covariance = centre @ np.linalg.inv(information + curb) @ centre
    return theta - theta.mean(), covariance


def fit_bradley_terry(records: list[dict], prior_sd: float | None = 2.0) -> list[Rating]:
    """Bradley-Terry ratings of presets from store.vote_records() dicts, best first.

    A left/right vote is a win for that side, a tie half a win for each. Votes between two images of
    the same preset, and both_bad votes, carry no ranking information: the fit ignores them and
    Rating.votes / Rating.wins count only the informative ones; a preset seen only in such votes is
    still listed. Records with an "address" are ballots: all of one address's votes on one pair of
    presets weigh 1 together (Rating.ballots); records without one weigh 1 each.

    Fitted by maximum a posteriori with an independent N(0, prior_sd^2) prior on each log-strength
    theta, which keeps undefeated and rarely compared presets finite (such a preset sits at 1000
    with a wide interval). prior_sd=None is plain maximum likelihood, which exists only when
    every preset has both beaten and lost to (or tied) the others, directly or through a chain;
    otherwise ValueError. Intervals: theta_i +- 1.96 sd from the inverse Hessian at the optimum
    (Laplace approximation), of theta centred to mean 0 (so a single preset's interval has width 0).
    """
    if prior_sd is not None and not prior_sd > 0:
        raise ValueError(f"prior_sd must be positive or None, not {prior_sd!r}")
    presets, wins, cast = _tally(records)
    if not presets:
        return []
    if prior_sd is None:
        _check_ml_exists(presets, wins)
    theta, covariance = _newton(wins, 0.0 if prior_sd is None else 1.0 / prior_sd ** 2)
    games, cast_games = wins + wins.T, cast + cast.T
    ratings = []
    for i, preset in enumerate(presets):
        half = Z95 * math.sqrt(max(covariance[i, i], 0.0))   # rounding can leave -1e-17 for width 0
        ratings.append(Rating(preset=preset, score=ELO_BASE + ELO_PER_THETA * theta[i],
                              low=ELO_BASE + ELO_PER_THETA * (theta[i] - half),
                              high=ELO_BASE + ELO_PER_THETA * (theta[i] + half),
                              votes=int(round(cast_games[i].sum())), wins=float(cast[i].sum()),
                              ballots=float(games[i].sum())))
    ratings.sort(key=lambda r: (-r.score, r.preset))
    return ratings


UNKNOWN_FAMILY = "unknown"   # the family of a preset whose YAML is gone


def family_of(preset: str) -> str:
    """The preset's family; UNKNOWN_FAMILY when the preset no longer exists (old votes and jobs
    outlive a removed YAML file, and the leaderboard must still show)."""
    try:
        return get_preset(preset).family
    except PresetError:
        return UNKNOWN_FAMILY


def fit_families(records: list[dict], prior_sd: float | None = 2.0, family=family_of) -> list[Rating]:
    """fit_bradley_terry over families: each vote's presets replaced by their families (`family`
    maps a preset name to one). Rating.preset then names a family. A vote between two presets of one
    family says nothing about families, like a same-preset vote about presets; one address's votes on
    a pair of families weigh 1 together."""
    names = {}
    for r in records:
        for side in ("left_preset", "right_preset"):
            if r[side] not in names:
                names[r[side]] = family(r[side])
    return fit_bradley_terry([{**r, "left_preset": names[r["left_preset"]], "right_preset": names[r["right_preset"]]}
                              for r in records], prior_sd)


@dataclass
class Matchup:
    preset: str
    opponent: str
    wins: float     # the preset's wins over the opponent, a tie counting one half
    votes: int      # informative votes between the two (left / right / tie)

    @property
    def rate(self) -> float:
        return self.wins / self.votes


def head_to_head(records: list[dict], order: list[str] | None = None) -> list[Matchup]:
    """For each ordered pair of presets with informative votes between them, the preset's wins over
    the opponent as cast (one per vote, ties half; both_bad and same-preset votes left out), so
    A-vs-B and B-vs-A rates add up to 1. Unlike the fit, votes are not merged into ballots: this is
    what voters said, the leaderboard is what the fit makes of it. Rows follow `order` (the
    leaderboard's, say; presets missing from it come after, by name), then the opponent in the same order."""
    presets, _, cast = _tally(records)
    rank = {p: k for k, p in enumerate(order or [])}
    position = sorted(range(len(presets)), key=lambda i: (rank.get(presets[i], len(rank)), presets[i]))
    return [Matchup(presets[i], presets[j], float(cast[i, j]), int(round(cast[i, j] + cast[j, i])))
            for i in position for j in position if i != j and cast[i, j] + cast[j, i] > 0]


# --- choosing the next pair -----------------------------------------------------------------

def _unvoted_pair(ids: list[int], voted: set[tuple[int, int]], rng: random.Random,
                  presets: dict[int, str] | None = None) -> tuple[int, int] | None:
    """A random pair of distinct ids that is not in voted (unordered), in random order; None if none.
    With `presets` (id -> preset), only pairs of two different presets."""
    ids = sorted(set(ids))   # sorted first, so the same rng seed gives the same pair whatever the SQL order
    pairs = [(a, b) for k, a in enumerate(ids) for b in ids[k + 1:] if (a, b) not in voted
             and (presets is None or presets[a] != presets[b])]
    if not pairs:
        return None
    left, right = rng.choice(pairs)
    # Which side an image is shown on must not be predictable: position biases votes.
    return (left, right) if rng.random() < 0.5 else (right, left)


def next_pair(store, voter: str, rng: random.Random, address: str | None = None,
              max_per_pair: int | None = None) -> tuple[int, int] | None:
    """Two finished job ids (left, right) this voter has not voted on as a pair, nor this address
    max_per_pair times (when given: a pair it could not vote on), or None.

    First two images of one compare group made by different presets (the same prompt and seed, so
    the vote compares the presets and nothing else); then two images of one prompt; otherwise any
    two finished images. Work is bounded: the voter's own pairs, a few random groups (each a handful
    of jobs), a few random prompts and a random sample of SAMPLE jobs, never the whole table; None
    means no unvoted pair was in that sample.
    """
    voted = store.voted_pairs(voter)
    if address is not None and max_per_pair is not None:
        voted |= store.full_pairs(address, max_per_pair)
    for group in store.done_groups(min_results=2, limit=GROUP_TRIES):
        done = {j.id: j.preset for j in store.group(group)[:SAMPLE] if j.status == "done"}
        pair = _unvoted_pair(list(done), voted, rng, presets=done)
        if pair is not None:
            return pair
    for prompt in store.prompts_with_results(min_results=2, limit=SAME_PROMPT_TRIES):
        pair = _unvoted_pair(store.done_jobs(prompt=prompt, limit=SAMPLE), voted, rng)
        if pair is not None:
            return pair
    return _unvoted_pair(store.done_jobs(limit=SAMPLE), voted, rng)


# --- casting a vote ---------------------------------------------------------------------------

class VoteLimit(T2IError):
    """The voter's address reached a vote limit; the message says what to do."""


@dataclass(frozen=True)
class VotePolicy:
    """Limits for votes from the web page, per client address (like SubmitPolicy's)."""

    max_per_pair: int = 1       # votes on one pair of images: a second visitor behind the address is refused
    max_per_minute: int = 30

    @classmethod
    def from_env(cls) -> "VotePolicy":
        """T2I_MAX_VOTES_PER_PAIR, T2I_MAX_VOTES_PER_MINUTE."""
        d = cls()
        return cls(int(os.environ.get("T2I_MAX_VOTES_PER_PAIR", d.max_per_pair)),
                   int(os.environ.get("T2I_MAX_VOTES_PER_MINUTE", d.max_per_minute)))

    def message(self, reached: QuotaReached) -> str:
        if reached.bound == "pair":
            return "this pair already has its votes from your address; your vote was not counted"
        return f"at most {self.max_per_minute} votes a minute from one address; please wait a moment"


def cast_vote(store, voter: str, address: str, left_job: int, right_job: int, choice: str,
              policy: VotePolicy) -> bool:
    """store.vote_limited with the policy's quota: False when this voter already voted on the pair;
    VoteLimit (nothing recorded) when the address reached a limit."""
    try:
        return store.vote_limited(voter, address, left_job, right_job, choice,
                                  VoteQuota(max_per_pair=policy.max_per_pair, max_per_minute=policy.max_per_minute))
    except QuotaReached as reached:
        raise VoteLimit(policy.message(reached)) from None


# --- per-image rate -------------------------------------------------------------------------

def win_rate(wins: float, appearances: int) -> float:
    """Laplace-smoothed win rate, (wins + 1) / (appearances + 2): an image never voted on is at 0.5 and
    one lucky vote does not top the gallery. Same formula as GALLERY_SORTS["preferred"] in store/sql.py."""
    return (wins + 1.0) / (appearances + 2.0)
