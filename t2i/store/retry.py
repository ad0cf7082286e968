"""How a long-running client (an executor) lives with a failing store: every StoreError is the
store's fault and transient. One warning when failures start and one line when they end (never a
line per call, never a traceback); waits that double up to RETRY_MAX; a deleted or replaced SQLite
file (StoreGone) is passed on, since nothing written to it would be seen again.
"""

from __future__ import annotations

import logging
import threading

from .errors import StoreError, StoreGone

log = logging.getLogger("t2i.executor")
RETRY_MAX = 10.0  # seconds between tries at most while the store fails
_FAILED = object()  # what _try returns when the store failed (None is a value calls return)


class StoreTrouble:
    def __init__(self, stopping: threading.Event, first_wait: float):
        self.stopping, self.first_wait = stopping, first_wait
        self.wait = first_wait
        self._failing = False
        self._lock = threading.Lock()  # shared with the heartbeat thread

    def failed(self, error: StoreError) -> None:
        with self._lock:
            if not self._failing:
                log.warning("the job store failed: %s; retrying with backoff", error)
            self._failing = True

    def ok(self) -> None:
        with self._lock:
            if self._failing:
                log.info("the job store works again")
            self._failing = False
            self.wait = self.first_wait

    def pause(self) -> None:
        """Wait before the next try (cut short by a stop request)."""
        self.stopping.wait(self.wait)
        self.wait = min(self.wait * 2, RETRY_MAX)

    def _try(self, call):
        """call()'s value, or _FAILED after a store failure (noted); a gone store is raised."""
        try:
            value = call()
        except StoreGone:
            raise
        except StoreError as error:
            self.failed(error)
            return _FAILED
        self.ok()
        return value

    def optional(self, call, default=None):
        """A call the work can do without (progress, a frame, an alive record): on a store failure the
        work goes on with `default` and the next call tries again."""
        value = self._try(call)
        return default if value is _FAILED else value

    def must(self, call, what: str):
        """A call that decides a job's end (complete, fail, cancel, release): tried until it goes
        through, so a job is neither lost nor charged an attempt for the store's fault. On a stop
        request it gives up after one more try and returns None: the job stays running until its
        lease expires, and the next sweep requeues it."""
        while (value := self._try(call)) is _FAILED:
            if self.stopping.is_set():
                log.warning("%s: the store failed while stopping; left for a sweep to requeue", what)
                return None
            self.pause()
        return value
