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

Each stream polls the store (POLL_S) on a worker thread: the executor writes progress every 0.5 s, so
a poll a quarter of that apart adds at most POLL_S to what the client sees (BENCHMARKS.md, "The HTTP
API"). A comment line every KEEPALIVE_S keeps proxies from closing a quiet stream (a long queue).
"""

from __future__ import annotations

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


def _look(job_id: int, frame_after: tuple | None):
    """The job, its place when queued, and its latest frame when running and possibly newer than
    frame_after (the frame's bytes are loaded only then)."""
    db = store()
    job = db.get(job_id)
    if job is None:
        return None, None, None
    position = db.queue_position(job_id) if job.status == "queued" else None
    frame = None
    if job.status == "running" and (frame_after is None or (job.attempts, job.step) > frame_after):
        frame = db.latest_frame(job_id)
    return job, position, frame


def _changes(job, position, frame, seen: Seen, who) -> list[bytes]:
    out = []
    if job.status == "queued":
        if not seen.started:
            out.append(event("queued", f"q{position}", job_state(job, who, position)))
            seen.started, seen.position = True, position
        elif position != seen.position:
            out.append(event("position", f"q{position}", {"id": job.id, "position": position}))
            seen.position = position
    elif job.status == "running":
        seen.started = True
        now = (job.attempts, job.step)
        if now != seen.progress:
            state = job_state(job, who)
            out.append(event("progress", f"r{now[0]}.{now[1]}", {k: state[k] for k in (
                "id", "step", "total", "loss", "elapsed", "remaining")}))
            seen.progress = now
        if frame is not None and (job.attempts, frame[0]) != seen.preview:
            seen.preview = (job.attempts, frame[0])
            out.append(event("preview", f"p{job.attempts}.{frame[0]}",
                             {"id": job.id, "step": frame[0], "url": links(job.id)["frame"]}))
    return out


async def stream(job_id: int, last_event_id: str | None, who):
    """The events of one job until it finishes (see the module's docstring)."""
    seen = Seen(last_event_id)
    quiet_since = time.monotonic()
    while True:
        job, position, frame = await anyio.to_thread.run_sync(_look, job_id, seen.preview)
        if job is None:   # deleted by the operator while watched
            yield event("failed", END, {"id": job_id, "status": "failed", "error": "the job was deleted"})
            return
        if job.status in FINISHED:
            yield event(job.status, END, job_state(job, who))
            return
        chunks = _changes(job, position, frame, seen, who)
        for chunk in chunks:
            yield chunk
        if chunks:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(POLL_S)   # the poll's cadence (see the module's docstring), not a wait on a result
