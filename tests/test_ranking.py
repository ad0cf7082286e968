"""t2i/service/ranking.py: the Bradley-Terry fit against hand-computed answers, next_pair and the vote tallies
against a real store (both backends, through the `store_url` fixture), and the gallery's win rate."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.optimize import minimize

from t2i.service.queue import submit_job
from t2i.presets import get_preset
from t2i.service.ranking import (UNKNOWN_FAMILY, Z95, VotePolicy, cast_vote, family_of, fit_bradley_terry, fit_families, head_to_head, next_pair, win_rate)
from t2i.spec import make_spec
from t2i.store import GroupItem, Result, open_store

PRESET = "tiny-vqgan-untrained"
PER_THETA = 400 / math.log(10)


def vote(left: str, right: str, choice: str, times: int = 1) -> list[dict]:
    return [{"left_job": 0, "right_job": 0, "left_preset": left, "right_preset": right, "choice": choice}] * times


def by_preset(ratings) -> dict:
    return {r.preset: r for r in ratings}


def half_width(r) -> float:
    assert r.high - r.score == pytest.approx(r.score - r.low, abs=1e-9)   # symmetric on the theta scale
    return (r.high - r.low) / 2


# --- the fit, by hand ------------------------------------------------------------------------

def test_two_presets_three_to_one_maximum_likelihood():
    ratings = fit_bradley_terry(vote("A", "B", "left", 3) + vote("A", "B", "right"), prior_sd=None)
    a, b = ratings
    assert (a.preset, b.preset) == ("A", "B")
    # The MLE of P(A beats B) is the observed 3/4, so theta_A - theta_B = ln(3/1).
    assert a.score - b.score == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert a.score - b.score == pytest.approx(190.8485, abs=1e-4)
    assert a.score + b.score == pytest.approx(2000, abs=1e-9)       # centred: mean theta 0
    # Fisher information of d = theta_A - theta_B is n p (1 - p) = 4 * 3/4 * 1/4 = 3/4; theta_A = d / 2.
    assert half_width(a) == pytest.approx(Z95 * math.sqrt(1 / 3) * PER_THETA, rel=1e-9)
    assert half_width(b) == pytest.approx(half_width(a), rel=1e-9)
    assert (a.votes, a.wins, b.votes, b.wins) == (4, 3.0, 4, 1.0)


def test_tie_counts_half_a_win_each():
    three_to_one = fit_bradley_terry(vote("A", "B", "left", 3) + vote("A", "B", "right"), prior_sd=None)
    # A: 2 wins + 2 ties = 3 of 4; B: 2 halves = 1 of 4. Order of sides does not matter.
    ties = fit_bradley_terry(vote("B", "A", "right", 2) + vote("A", "B", "tie") + vote("B", "A", "tie"),
                             prior_sd=None)
    for x, y in zip(three_to_one, ties):
        assert x.preset == y.preset
        assert y.score == pytest.approx(x.score, abs=1e-6)
        assert (y.low, y.high) == pytest.approx((x.low, x.high), abs=1e-6)
    assert by_preset(ties)["A"].wins == 3.0 and by_preset(ties)["B"].wins == 1.0


def test_three_way_cycle_is_a_draw():
    ratings = fit_bradley_terry(vote("A", "B", "left") + vote("B", "C", "left") + vote("A", "C", "right"),
                                prior_sd=None)
    assert [r.preset for r in ratings] == ["A", "B", "C"]     # equal scores: by name
    # At theta = 0 every p = 1/2, so the information is (3I - J)/4; its pseudo-inverse 4/3 (I - J/3)
    # gives each centred theta a variance of 8/9.
    for r in ratings:
        assert r.score == pytest.approx(1000, abs=1e-9)
        assert half_width(r) == pytest.approx(Z95 * math.sqrt(8 / 9) * PER_THETA, rel=1e-9)
        assert (r.votes, r.wins) == (2, 1.0)


def test_maximum_likelihood_refuses_undefeated_or_disconnected():
    with pytest.raises(ValueError, match="prior_sd"):
        fit_bradley_terry(vote("A", "B", "left", 3), prior_sd=None)
    with pytest.raises(ValueError, match="prior_sd"):        # {A, B} never compared with {C, D}
        fit_bradley_terry(vote("A", "B", "left") + vote("A", "B", "right") + vote("C", "D", "tie"), prior_sd=None)
    with pytest.raises(ValueError):
        fit_bradley_terry(vote("A", "B", "left"), prior_sd=0.0)


def test_prior_keeps_an_undefeated_preset_finite():
    ratings = fit_bradley_terry(vote("A", "B", "left", 3) + vote("B", "C", "left") + vote("C", "B", "left"))
    # C split with B, who also lost three times to A: C ranks above B.
    assert [r.preset for r in ratings] == ["A", "C", "B"]
    a = ratings[0]
    assert math.isfinite(a.score) and math.isfinite(a.low) and math.isfinite(a.high)
    assert a.score > ratings[1].score + 50
    assert a.low < a.score < a.high and a.high - a.low < 4000
    assert sum(r.score for r in ratings) / 3 == pytest.approx(1000, abs=1e-9)


def test_map_matches_a_generic_optimiser():
    records = (vote("A", "B", "left", 5) + vote("A", "B", "right", 2) + vote("B", "C", "tie", 3)
               + vote("C", "A", "left") + vote("D", "A", "right", 4))
    prior_sd = 1.5
    names = ["A", "B", "C", "D"]
    wins = np.zeros((4, 4))
    for r in records:
        i, j = names.index(r["left_preset"]), names.index(r["right_preset"])
        share = {"left": 1.0, "right": 0.0, "tie": 0.5}[r["choice"]]
        wins[i, j] += share
        wins[j, i] += 1 - share

    def negative_log_posterior(t):
        return (wins * np.logaddexp(0, -(t[:, None] - t[None, :]))).sum() + (t @ t) / (2 * prior_sd ** 2)

    best = minimize(negative_log_posterior, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    got = by_preset(fit_bradley_terry(records, prior_sd=prior_sd))
    for name, t in zip(names, best - best.mean()):
        assert got[name].score == pytest.approx(1000 + PER_THETA * t, abs=1e-3)
    # Interval: the inverse of a finite-difference Hessian at the mode, centred.
    eps, hessian = 1e-4, np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            e_i, e_j = np.eye(4)[i] * eps, np.eye(4)[j] * eps
            hessian[i, j] = (negative_log_posterior(best + e_i + e_j) - negative_log_posterior(best + e_i - e_j)
                             - negative_log_posterior(best - e_i + e_j)
                             + negative_log_posterior(best - e_i - e_j)) / (4 * eps * eps)
    centre = np.eye(4) - 0.25
    variance = np.diag(centre @ np.linalg.inv(hessian) @ centre)
    for name, v in zip(names, variance):
        assert half_width(got[name]) == pytest.approx(Z95 * math.sqrt(v) * PER_THETA, rel=1e-3)


def test_uninformative_votes_do_not_change_the_fit():
    base = vote("A", "B", "left", 3) + vote("B", "C", "left") + vote("C", "A", "tie")
    noise = vote("A", "A", "left", 5) + vote("B", "B", "tie") + vote("A", "B", "both_bad", 4) + vote("C", "A",
                                                                                                      "both_bad")
    for prior_sd in (2.0, None):
        plain, noisy = fit_bradley_terry(base, prior_sd=prior_sd), fit_bradley_terry(noise + base, prior_sd=prior_sd)
        assert [r.preset for r in plain] == [r.preset for r in noisy]
        for x, y in zip(plain, noisy):
            assert (y.score, y.low, y.high) == pytest.approx((x.score, x.low, x.high), abs=1e-9)
            assert (y.votes, y.wins) == (x.votes, x.wins)        # only informative votes are counted
    assert by_preset(fit_bradley_terry(noise + base))["A"].votes == 4


def test_preset_only_in_uninformative_votes_is_listed_at_the_centre():
    ratings = by_preset(fit_bradley_terry(vote("A", "B", "left", 3) + vote("C", "C", "left")
                                          + vote("C", "A", "both_bad")))
    c = ratings["C"]
    assert c.score == pytest.approx(1000, abs=1e-6)
    assert (c.votes, c.wins) == (0, 0.0)
    assert half_width(c) > half_width(ratings["A"])              # nothing known but the prior
    assert ratings["A"].score > 1000 > ratings["B"].score


def test_a_single_preset_sits_at_1000():
    (only,) = fit_bradley_terry(vote("A", "A", "right", 3))
    assert (only.preset, only.score, only.votes, only.wins) == ("A", 1000.0, 0, 0.0)
    assert fit_bradley_terry([]) == []


def test_intervals_shrink_as_votes_repeat():
    pattern = vote("A", "B", "left", 3) + vote("B", "C", "left", 2) + vote("C", "A", "left") + vote("B", "A", "tie")
    for prior_sd in (2.0, None):
        once = by_preset(fit_bradley_terry(pattern, prior_sd=prior_sd))
        four = by_preset(fit_bradley_terry(pattern * 4, prior_sd=prior_sd))
        for name in "ABC":
            assert half_width(four[name]) < half_width(once[name])
            assert four[name].votes == 4 * once[name].votes
            if prior_sd is None:
                # Same MLE, four times the information: the interval halves exactly.
                assert four[name].score == pytest.approx(once[name].score, abs=1e-6)
                assert half_width(four[name]) == pytest.approx(half_width(once[name]) / 2, rel=1e-9)


# --- against a real store ----------------------------------------------------------------------

@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def finished(store, prompt: str) -> int:
    """Submit, claim and complete one job (nothing else may be queued)."""
    job_id = submit_job(store, prompt, PRESET, iterations=1)
    job = store.claim("w-test", 300.0)
    assert job is not None and job.id == job_id
    assert store.complete(job.lease, Result(job_id=job_id, gif=b"GIF", png=b"PNG", thumbnail=b"t", parameters={},
                                            width=8, height=8, seed=1, created_at=0.0))
    return job_id


def unordered(pair) -> tuple[int, int]:
    return tuple(sorted(pair))


def test_next_pair_prefers_same_prompt_then_any_unvoted(store):
    cat1, cat2 = finished(store, "a cat"), finished(store, "a cat")
    dog, fish = finished(store, "a dog"), finished(store, "a fish")
    queued = submit_job(store, "a cat", PRESET, iterations=1)       # not finished: never offered
    everything = {cat1, cat2, dog, fish}
    rng = random.Random(7)

    sides = set()
    for _ in range(20):
        pair = next_pair(store, "alice", rng)
        assert unordered(pair) == (cat1, cat2)
        sides.add(pair)
    assert sides == {(cat1, cat2), (cat2, cat1)}                    # which side is left is random

    assert store.vote("alice", cat2, cat1, "left")
    seen = set()
    while (pair := next_pair(store, "alice", rng)) is not None:
        assert set(pair) <= everything and pair[0] != pair[1]
        assert unordered(pair) not in store.voted_pairs("alice")
        assert queued not in pair
        seen.add(unordered(pair))
        assert store.vote("alice", *pair, "tie")
    assert seen == {unordered(p) for p in [(cat1, dog), (cat1, fish), (cat2, dog), (cat2, fish), (dog, fish)]}
    assert len(store.voted_pairs("alice")) == 6                     # every pair, then None

    assert unordered(next_pair(store, "bob", rng)) == (cat1, cat2)  # votes are per voter


def test_next_pair_none_with_fewer_than_two_images(store):
    assert next_pair(store, "alice", random.Random(0)) is None
    finished(store, "a cat")
    assert next_pair(store, "alice", random.Random(0)) is None


def test_a_vote_is_stored_once_per_voter_and_pair(store):
    a, b = finished(store, "a cat"), finished(store, "a dog")
    assert store.vote("alice", a, b, "left") is True
    assert store.vote("alice", a, b, "right") is False
    assert store.vote("alice", b, a, "tie") is False                 # the pair is unordered
    records = store.vote_records()
    assert records == [{"left_job": a, "right_job": b, "left_preset": PRESET, "right_preset": PRESET,
                        "choice": "left", "address": None}]
    assert store.voted_pairs("alice") == {(a, b)}
    tallies = {g["id"]: (g["wins"], g["appearances"]) for g in store.gallery(sort="preferred")[0]}
    assert tallies == {a: (1.0, 1), b: (0.0, 1)}                     # the rejected votes changed nothing
    assert store.vote("bob", b, a, "right") is True                  # another voter may vote on it
    assert len(store.vote_records()) == 2


def test_a_vote_needs_two_different_finished_images(store):
    a = finished(store, "a cat")
    queued = submit_job(store, "not yet", PRESET, iterations=1)
    with pytest.raises(ValueError, match="two different images"):
        store.vote("alice", a, a, "left")
    with pytest.raises(ValueError, match="not both finished"):
        store.vote("alice", a, queued, "left")
    assert store.vote_records() == [] and store.result(a).appearances == 0


def test_tallies_and_preferred_order(store):
    j1, j2, j3, j4 = (finished(store, p) for p in ("a cat", "a dog", "a fish", "a bird"))
    assert store.vote("v1", j1, j2, "left")
    assert store.vote("v1", j3, j1, "right")
    assert store.vote("v1", j2, j3, "tie")
    assert store.vote("v1", j4, j1, "both_bad")
    items, total = store.gallery(sort="preferred")
    assert total == 4
    tallies = {g["id"]: (float(g["wins"]), int(g["appearances"])) for g in items}
    assert tallies == {j1: (2.0, 3), j2: (0.5, 2), j3: (0.5, 2), j4: (0.0, 1)}
    # 3/5, then j2 and j3 at 1.5/4 (newest first on a tie), then 1/3.
    assert [g["id"] for g in items] == [j1, j3, j2, j4]
    rates = [win_rate(*tallies[g["id"]]) for g in items]
    assert rates == sorted(rates, reverse=True)
    assert rates == pytest.approx([0.6, 0.375, 0.375, 1 / 3])


def test_fit_from_store_records(store):
    """vote_records() feeds the fit directly; jobs of one preset only give a single, uninformed rating."""
    a, b = finished(store, "a cat"), finished(store, "a cat")
    assert store.vote("alice", a, b, "left")
    (only,) = fit_bradley_terry(store.vote_records())
    assert (only.preset, only.score, only.votes) == (PRESET, 1000.0, 0)


# --- ballot stuffing: one address is one ballot per pair of presets -----------------------------

STUFFING_BOUND = 30.0   # Elo points: the most one address's 50 votes may move a preset (one ballot: about 15)


def from_addresses(left: str, right: str, choice: str, addresses) -> list[dict]:
    return [dict(r, address=a) for r, a in zip(vote(left, right, choice, len(addresses)), addresses)]


def score(records, preset="A") -> float:
    return by_preset(fit_bradley_terry(records))[preset].score


def test_one_address_voting_fifty_times_moves_the_leaderboard_as_one_vote():
    base = (from_addresses("A", "B", "left", [f"10.0.0.{i}" for i in range(5)])
            + from_addresses("A", "B", "right", [f"10.0.1.{i}" for i in range(5)]))
    assert score(base) == pytest.approx(1000, abs=1e-9)
    stuffing = from_addresses("A", "B", "left", ["203.0.113.66"] * 50)
    stuffed = score(base + stuffing)
    one_more = score(base + from_addresses("A", "B", "left", ["203.0.113.67"]))
    crowd = score(base + from_addresses("A", "B", "left", [f"192.0.2.{i}" for i in range(50)]))
    assert stuffed == pytest.approx(one_more, abs=1e-6)           # 50 votes from one address = 1 ballot
    assert 0 < stuffed - 1000 < STUFFING_BOUND
    assert crowd - 1000 > 6 * STUFFING_BOUND                      # 50 addresses are 50 ballots (about +200)
    a = by_preset(fit_bradley_terry(base + stuffing))["A"]
    assert (a.votes, a.wins, a.ballots) == (60, 55.0, 11.0)       # as cast, and as counted


def map_gap(wins: float, losses: float, prior_sd: float = 2.0) -> float:
    """Two presets: the MAP gap d solves wins - (wins + losses) sigmoid(d) - d / (2 sd^2) = 0 (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(200):
        d = (lo + hi) / 2
        lo, hi = (d, hi) if wins - (wins + losses) / (1 + math.exp(-d)) - d / (2 * prior_sd ** 2) > 0 else (lo, d)
    return PER_THETA * d


def test_an_address_votes_on_a_pair_of_presets_are_averaged_into_one_ballot():
    """3 wins and 1 loss from one address weigh 3/4 of a win and 1/4 of a loss; votes without an address
    (cast before addresses were kept, or from the shell) weigh 1 each, as before."""
    one_address = from_addresses("A", "B", "left", ["x"] * 3) + from_addresses("B", "A", "left", ["x"])
    a, b = fit_bradley_terry(one_address)
    assert a.score - b.score == pytest.approx(map_gap(0.75, 0.25), abs=1e-6)
    assert (a.votes, a.wins, a.ballots) == (4, 3.0, 1.0)
    no_address = vote("A", "B", "left", 3) + vote("B", "A", "left")
    a, b = fit_bradley_terry(no_address)
    assert a.score - b.score == pytest.approx(map_gap(3, 1), abs=1e-6) and a.ballots == 4.0
    # The same ballot on another pair of presets is another ballot.
    three = fit_bradley_terry(one_address + from_addresses("A", "C", "left", ["x"] * 5))
    assert by_preset(three)["A"].ballots == 2.0


def test_stuffing_through_the_store_is_bounded(store):
    """From the page's path: one address casts a vote on every one of 36 image pairs (its quota allows one
    per pair) for preset A; the leaderboard from store.vote_records() moves less than the bound."""
    jobs = {p: [] for p in ("tiny-vqgan-untrained", "tiny-gumbel-untrained")}
    for preset in jobs:
        for i in range(6):
            job_id = submit_job(store, f"p{i}", preset, iterations=1)
            job = store.claim("w", 60)
            assert store.complete(job.lease, Result(job_id, b"g", b"p", b"t", {}, 8, 8, 1, 0.0))
            jobs[preset].append(job_id)
    a, b = jobs["tiny-vqgan-untrained"], jobs["tiny-gumbel-untrained"]
    policy = VotePolicy(max_per_pair=1, max_per_minute=1000)
    for i in range(4):   # an even start from four addresses
        assert cast_vote(store, f"v{i}", f"10.0.0.{i}", a[i], b[i], "left" if i % 2 else "right", policy)
    start = store.vote_records()
    before = score(start, "tiny-vqgan-untrained")
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert cast_vote(store, f"stuffer-{i}-{j}", "203.0.113.66", x, y, "left", policy)
    records = store.vote_records()
    assert len(records) == 40
    stuffed = score(records, "tiny-vqgan-untrained")
    # As much as one ballot from a new address (on this small 2:2 start, about 32 points), not 36 ballots.
    assert stuffed == pytest.approx(score(start + [records[-1]], "tiny-vqgan-untrained"), abs=1e-6)
    assert 0 < stuffed - before < 40
    unweighted = score([dict(r, address=None) for r in records], "tiny-vqgan-untrained")
    assert unweighted - before > 200                               # what the 36 votes did before


# --- the gallery's rate ------------------------------------------------------------------------

def test_win_rate():
    assert win_rate(0, 0) == 0.5
    assert win_rate(1, 1) == pytest.approx(2 / 3)
    assert win_rate(0, 1) == pytest.approx(1 / 3)
    assert win_rate(0.5, 1) == 0.5
    assert win_rate(3, 4) == pytest.approx(4 / 6)
    assert win_rate(10, 10) < 1 and win_rate(0, 10) > 0
    assert win_rate(1, 1) < win_rate(9, 10)          # one lucky vote does not beat a long record


# --- families and head to head, by hand ---------------------------------------------------------

FAMILY = {"A1": "x", "A2": "x", "B1": "y", "B2": "y"}


def test_the_family_fit_is_the_preset_fit_over_families():
    # x beats y 3 to 1 through four different preset pairs; two votes inside family x say nothing.
    records = (vote("A1", "B1", "left") + vote("B2", "A2", "right") + vote("A2", "B1", "left")
               + vote("B1", "A1", "left") + vote("A1", "A2", "left", 2))
    x, y = fit_families(records, prior_sd=None, family=FAMILY.get)
    assert (x.preset, y.preset) == ("x", "y")
    assert x.score - y.score == pytest.approx(400 * math.log10(3), abs=1e-6)       # the MLE: ln(3/1)
    assert half_width(x) == pytest.approx(Z95 * math.sqrt(1 / 3) * PER_THETA, rel=1e-9)
    assert (x.votes, x.wins, y.votes, y.wins) == (4, 3.0, 4, 1.0)
    # The same answer as fitting the family names directly.
    direct = fit_bradley_terry(vote("x", "y", "left", 3) + vote("x", "y", "right"), prior_sd=None)
    assert [r.preset for r in direct] == ["x", "y"]
    assert [r.score for r in direct] == pytest.approx([x.score, y.score], abs=1e-9)


def test_families_of_real_presets_and_a_removed_one():
    assert family_of("tiny-vqgan-untrained") == "guided" == get_preset("tiny-vqgan-untrained").family
    assert family_of("tiny-diffusion-untrained") == "diffusion" and family_of("tiny-gan-untrained") == "gan"
    assert family_of("a-preset-whose-yaml-was-removed") == UNKNOWN_FAMILY == "unknown"
    ratings = fit_families(vote("a-preset-whose-yaml-was-removed", "tiny-gan-untrained", "left", 2)
                           + vote("tiny-diffusion-untrained", "tiny-gan-untrained", "tie"))
    assert {r.preset for r in ratings} == {"unknown", "gan", "diffusion"}
    assert by_preset(ratings)["unknown"].wins == 2.0 and by_preset(ratings)["gan"].votes == 3


def test_head_to_head_counts_votes_as_cast():
    records = (vote("A", "B", "left", 2) + vote("B", "A", "left") + vote("A", "B", "tie")   # A: 2.5 of 4
               + vote("A", "B", "both_bad", 5) + vote("A", "A", "left", 3)                # no information
               + vote("C", "A", "right") + vote("B", "C", "tie", 2))                      # A 1 of 1; B 1 of 2
    # The same address voting twice still counts twice here (the fit merges it into one ballot).
    records += [{**vote("A", "B", "left")[0], "address": "10.0.0.1"}] * 2                 # A: 4.5 of 6
    got = {(m.preset, m.opponent): (m.wins, m.votes, m.rate) for m in head_to_head(records)}
    assert got == {("A", "B"): (4.5, 6, 0.75), ("B", "A"): (1.5, 6, 0.25),
                   ("A", "C"): (1.0, 1, 1.0), ("C", "A"): (0.0, 1, 0.0),
                   ("B", "C"): (1.0, 2, 0.5), ("C", "B"): (1.0, 2, 0.5)}
    ordered = head_to_head(records, order=["C", "B"])
    assert [(m.preset, m.opponent) for m in ordered] == [("C", "B"), ("C", "A"), ("B", "C"), ("B", "A"),
                                                          ("A", "C"), ("A", "B")]
    assert head_to_head([]) == [] and head_to_head(vote("A", "A", "left")) == []


# --- next_pair and compare groups, against a real store ------------------------------------------------

def group_of(store, prompt: str, presets: list[str]) -> list[int]:
    """A compare group (one prompt, one seed, several presets), every job finished."""
    items = []
    for name in presets:
        p = get_preset(name)
        sp = make_spec(prompt, name, family=p.family, defaults=p.defaults, post=p.post, seed=3)
        items.append(GroupItem(spec=sp.to_dict(), batch_key=sp.batch_key, total=sp.total_steps))
    ids = store.submit_group(items)
    for job_id in ids:
        job = store.claim("w-test", 300.0, batch_key=store.get(job_id).batch_key)
        assert job is not None and job.id == job_id
        assert store.complete(job.lease, Result(job_id=job_id, gif=b"GIF", png=b"PNG", thumbnail=b"t",
                                                parameters={}, width=8, height=8, seed=3, created_at=0.0))
    return ids


def test_next_pair_prefers_same_group_pairs_of_different_presets_then_falls_back(store):
    cat1, cat2 = finished(store, "a cat"), finished(store, "a cat")   # same prompt, same preset, no group
    a, b, c, d = group_of(store, "a dog", [PRESET, "tiny-gumbel-untrained", "tiny-gan-untrained", PRESET])
    # d has a's preset: (a, d) is the only pair of the group that compares nothing.
    in_group = {unordered(p) for p in [(a, b), (a, c), (b, c), (b, d), (c, d)]}
    rng = random.Random(5)
    seen = set()
    for _ in range(5):
        pair = next_pair(store, "alice", rng)
        assert unordered(pair) in in_group                            # the group first, while it has pairs
        seen.add(unordered(pair))
        assert store.vote("alice", *pair, "left")
    assert seen == in_group
    # The group is used up for alice: then the same-prompt pairs (the two cats, and a and d of one
    # preset), then any.
    same_prompt = set()
    for _ in range(2):
        pair = next_pair(store, "alice", rng)
        same_prompt.add(unordered(pair))
        assert store.vote("alice", *pair, "tie")
    assert same_prompt == {(cat1, cat2), (a, d)}
    rest = set()
    while (pair := next_pair(store, "alice", rng)) is not None:
        rest.add(unordered(pair))
        assert store.vote("alice", *pair, "tie")
    assert len(rest) == 15 - 7 and not rest & (in_group | same_prompt)   # 6 images: 15 pairs in all

    # Another voter starts with the group again; the address's full pairs are skipped like today.
    for pair in in_group - {(a, b)}:
        assert cast_vote(store, "bob", "10.0.0.7", *pair, "left", VotePolicy(max_per_pair=1))
    for _ in range(5):
        assert unordered(next_pair(store, "carol", rng, address="10.0.0.7", max_per_pair=1)) == (a, b)
    assert unordered(next_pair(store, "carol", rng)) in in_group
