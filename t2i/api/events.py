"""A job's live events as server-sent events (text/event-stream), read from the store's progress.

    queued      once, when the stream starts on a queued job: the job, with its place
    position    its place in the queue changed
    progress    the step changed: step, total, loss (guided families), estimate of what remains
    preview     a new progress frame: its step and the address of the frame
    done | failed | cancelled    the job as GET /jobs/{id} shows it; the stream then ends

Every event's id names the state it reports ("q3": third in the queue, "r1.40": attempt 1 at step 40,
"p1.40": the frame of step 40, "end"). A client that reconnects with Last-Event-ID gets only what is
newer than that state: what still matters about a job is its current state, so the steps in between
are not replayed (a frame or a step superseded by a later one tells nothing more). A reconnect after
"end" is answered 204, which tells an EventSource to stop reconnecting.

The streams poll the store every POLL_S together (Board: one statement for every job followed in
this process). The executor writes progress every 0.5 s; polling at half that adds at most POLL_S
(on average half of it) to what the client sees (BENCHMARKS.md, "The HTTP API"). A comment line
every KEEPALIVE_S keeps proxies from closing a quiet stream (a long queue).
"""

from __future__ import annotations

import asyncio
import json
import time

import anyio

from ..store import FINISHED
from .service import links, job_state, store

POLL_S = 0.25
KEEPALIVE_S = 15.0
END = "end"


def event(name: str, event_id: str, data: dict) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Seen:
    """What the client already has, from Last-Event-ID and then from what this stream sent."""

    def __init__(self, last_event_id: str | None):
        self.position = self.progress = self.preview = None
        self.started = False   # the client saw the job queued (or later): no "queued" event again
        last = (last_event_id or "").strip()
        try:
            if last.startswith("q"):
                self.position, self.started = int(last[1:]), True
            elif last[:1] in ("r", "p"):
                attempt, step = (int(x) for x in last[1:].split("."))
                self.progress = self.preview = (attempt, step)
                self.started = True
        except ValueError:   # not one of ours: start from scratch
            pass

    @staticmethod
    def ended(last_event_id: str | None) -> bool:
        return (last_event_id or "").strip() == END


class Board:
    """The watched jobs' states, shared by every stream of this process: one store.watch() for all of
    them at most once per POLL_S, on a worker thread, by whichever stream finds it stale first
    (the others wait for that read instead of making their own). 200 streams on 50 jobs were 800
    reads a second, one per stream and poll; now they are 4 (BENCHMARKS.md, "The HTTP API")."""

    def __init__(self):
        self.watchers: dict[int, int] = {}   # job id -> streams following it
        self.states: dict = {}
        self.read_at = -1.0
        self._lock: asyncio.Lock | None = None

    def follow(self, job_id: int) -> None:
        self.watchers[job_id] = self.watchers.get(job_id, 0) + 1
        self.read_at = -1.0   # a new job: read it at the stream's first look

    def leave(self, job_id: int) -> None:
        self.watchers[job_id] -= 1
        if not self.watchers[job_id]:
            del self.watchers[job_id]

    async def look(self, job_id: int):
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() - self.read_at >= POLL_S * 0.9:
                self.states = await anyio.to_thread.run_sync(store().watch, list(self.watchers))
                self.read_at = time.monotonic()
        return self.states.get(job_id)


board = Board()


async def _job(job_id: int):
    return await anyio.to_thread.run_sync(store().get, job_id)


async def _changes(watched, seen: Seen, who) -> list[bytes]:
    """The events a change of state makes (the full job is read only when one is sent)."""
    out = []
    if watched.status == "queued":
        if not seen.started:
            job = await _job(watched.id)
            out.append(event("queued", f"q{watched.position}", job_state(job, who, watched.position)))
            seen.started, seen.position = True, watched.position
        elif watched.position != seen.position:
            out.append(event("position", f"q{watched.position}", {"id": watched.id, "position": watched.position}))
            seen.position = watched.position
    elif watched.status == "running":
        seen.started = True
        now = (watched.attempts, watched.step)
        if now != seen.progress:
            state = job_state(await _job(watched.id), who)
            out.append(event("progress", f"r{now[0]}.{now[1]}", {k: state[k] for k in (
                "id", "step", "total", "loss", "elapsed", "remaining")}))
            seen.progress = now
        frame = watched.frame_step
        if frame is not None and (watched.attempts, frame) != seen.preview:
            seen.preview = (watched.attempts, frame)
            out.append(event("preview", f"p{watched.attempts}.{frame}",
                             {"id": watched.id, "step": frame, "url": links(watched.id)["frame"]}))
    return out


async def stream(job_id: int, last_event_id: str | None, who):
    """The events of one job until it finishes (see the module's docstring)."""
    seen = Seen(last_event_id)
    quiet_since = time.monotonic()
    board.follow(job_id)
    try:
        while True:
            watched = await board.look(job_id)
            if watched is None:   # deleted by the operator while watched
                yield event("failed", END, {"id": job_id, "status": "failed", "error": "the job was deleted"})
                return
            if watched.status in FINISHED:
                yield event(watched.status, END, job_state(await _job(job_id), who))
                return
            chunks = await _changes(watched, seen, who)
            for chunk in chunks:
                yield chunk
            if chunks:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            await anyio.sleep(POLL_S)   # the poll's cadence (see the module's docstring), not a wait on a result
    finally:
        board.leave(job_id)
