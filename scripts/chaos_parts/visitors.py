"""Visitors: threads that do what the pages do, through the functions the pages call.

    submit       queue.submit_job with the page's policy (tiny presets, a few steps)
    group        queue.submit_group: one prompt on 2 or 3 presets (a compare group)
    vote         compare.view + compare.vote_group on a finished group
    gallery      store.gallery pages (search, sort, offset), store.jobs, store.counts
    cancel       store.cancel of one of the visitor's own jobs

and one hostile visitor that goes round tests/hostile.py's corpus (a PNG to open, or options to
submit), each case in the probe's child process (probe.py).

A store error during a fault is the page's expected answer (one line): counted, not a finding.
Anything else raised, or a store error of several lines, is.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from hostile import hostile_options, hostile_pngs

from t2i.errors import SpecError, T2IError
from t2i.service import compare
from t2i.service.queue import SubmitPolicy, submit_group, submit_job
from t2i.service.ranking import VotePolicy
from t2i.store import StoreError, open_store

WORDS = "red green blue small large circle square star cat lighthouse storm dusk oil painting".split()
PRESETS = {"tiny-vqgan-untrained": dict(iterations=3, cutn=2, save_every=1),
           "tiny-gan-untrained": dict(steps=3, save_every=1),
           "tiny-diffusion-untrained": dict(steps=3, save_every=1)}
ACTIONS = {"submit": 30, "group": 12, "vote": 10, "gallery": 30, "cancel": 4}


class Visitors:
    """`ids`: every job id a submit acknowledged; `counts`: actions done; `refused`: expected refusals
    by kind; `problems`: findings."""

    def __init__(self, url: str, n: int, seed: int, probe, interval_s: float):
        self.url, self.n, self.seed, self.probe, self.interval_s = url, n, seed, probe, interval_s
        self.ids: list[int] = []
        self.counts: Counter = Counter()
        self.refused: Counter = Counter()
        self.problems: list[str] = []
        self.hostile_seen: dict[str, list[str]] = {}
        self.gallery_s: list[float] = []  # a gallery page's read, as the page's thread waits for it
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"chaos-visitor-{i}")
                        for i in range(n)]
        self.threads.append(threading.Thread(target=self._hostile, daemon=True, name="chaos-hostile"))
        self.cases = [("png", name, make) for name, make in hostile_pngs().items()] + \
                     [("options", name, fields) for name, fields in hostile_options().items()]
        self.rounds = 0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(600)  # the hostile visitor ends its first round: a bounded wait on bounded reads

    def _loop(self, i: int) -> None:
        rng = random.Random(self.seed * 1000 + i)
        me = {"voter": f"chaos-visitor-{i}", "mine": [], "rng": rng}
        store = None
        while not self.stop.wait(rng.uniform(0, 2 * self.interval_s)):  # interval_s on average
            action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
            try:
                store = store or open_store(self.url)
                getattr(self, "_" + action)(store, me)
                self._count(action)
            except (StoreError, T2IError, SpecError) as e:
                self._refused(action, e)
            except Exception as e:  # noqa: BLE001 - a finding, kept with its place
                self._problem(f"{action}: {type(e).__name__}: {str(e)[:160]}")

    def _count(self, action: str) -> None:
        with self.lock:
            self.counts[action] += 1

    def _refused(self, action: str, e: Exception) -> None:
        with self.lock:
            self.refused[f"{action}: {type(e).__name__}"] += 1
        if len(str(e).splitlines()) != 1:
            self._problem(f"{action}: {type(e).__name__} of {len(str(e).splitlines())} lines: {str(e)[:160]!r}")

    def _problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def _address(self, rng) -> str:
        return f"198.51.100.{rng.randrange(1, 250)}"  # many addresses: the per-address limits stay out of the way

    def _acknowledged(self, me, ids) -> None:
        with self.lock:
            self.ids.extend(ids)
        me["mine"].extend(ids)

    def _submit(self, store, me) -> None:
        rng = me["rng"]
        preset = rng.choice(list(PRESETS))
        job_id = submit_job(store, " ".join(rng.sample(WORDS, 3)), preset, submitter=me["voter"],
                            address=self._address(rng), policy=SubmitPolicy(), seed=rng.randrange(2**31),
                            **PRESETS[preset])
        self._acknowledged(me, [job_id])

    def _group(self, store, me) -> None:
        rng = me["rng"]
        presets = rng.sample(list(PRESETS), rng.choice([2, 3]))
        fields = {k: v for p in presets for k, v in PRESETS[p].items()}  # an option no chosen family has is refused
        ids = submit_group(store, " ".join(rng.sample(WORDS, 3)), presets, submitter=me["voter"],
                           address=self._address(rng), policy=SubmitPolicy(), rng=rng, **fields)
        self._acknowledged(me, ids)

    def _vote(self, store, me) -> None:
        rng = me["rng"]
        groups = store.done_groups(min_results=2, limit=20)
        if not groups:
            return
        seen = compare.view(store, me["voter"], rng.choice(groups))
        if seen is None or not seen.can_vote:
            return
        best = rng.choice([c.job.id for c in seen.done] + [None])
        compare.vote_group(store, me["voter"], self._address(rng), [c.job for c in seen.columns], best, VotePolicy())

    def _gallery(self, store, me) -> None:
        rng = me["rng"]
        start = time.monotonic()
        rows, total = store.gallery(search=rng.choice([None, rng.choice(WORDS)]), sort=rng.choice(["newest", "preferred"]),
                                    limit=24, offset=rng.choice([0, 0, 24, 48]))
        with self.lock:
            self.gallery_s.append(time.monotonic() - start)
        # Not against `total`: the page and its count are two reads, and jobs finish between them
        # (a short PostgreSQL run once saw 8 rows of a count of 7), which the page shows harmlessly.
        if len(rows) > 24:
            self._problem(f"gallery: {len(rows)} rows of {total}")
        store.jobs(limit=50)
        store.counts()

    def _cancel(self, store, me) -> None:
        if me["mine"]:
            store.cancel(me["rng"].choice(me["mine"]))

    def _hostile(self) -> None:
        """Round and round the corpus until the run ends, and at least once (a short run too);
        each case's problems are kept by name."""
        while not (self.stop.is_set() and self.rounds):
            for kind, name, payload in self.cases:
                if self.stop.wait(self.interval_s) and self.rounds:
                    return
                try:
                    outcome = self.probe.probe(kind, name, payload() if kind == "png" else payload, self.url)
                except Exception as e:  # noqa: BLE001 - the probe itself failing is a finding of the run
                    self._problem(f"hostile {name}: the probe failed: {type(e).__name__}: {e}")
                    continue
                with self.lock:
                    seen = self.hostile_seen.setdefault(f"{kind}: {name}", [])
                    seen.extend(p for p in outcome.problems if p not in seen)
                    self.counts[f"hostile {kind}"] += 1
            self.rounds += 1
