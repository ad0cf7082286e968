"""How a long-running client (an executor) lives with a failing store: every StoreError is the
store's fault and transient. One warning when failures start, then one at the 2nd, 4th, 8th, ...
failure (a full disk fails every frame while reads and empty claims still work: a line per frame
filled the log), and one line when a warned failure ends; never a traceback. Waits double up to
RETRY_MAX; a deleted or replaced SQLite file (StoreGone) is passed on, since nothing written to it
would be seen again.
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import StoreError, StoreGone

log = logging.getLogger("t2i.executor")
RETRY_MAX = 10.0  # seconds between tries at most while the store fails
QUIET = 300.0     # seconds without a failure after which the next one starts a new count (and says so)
_FAILED = object()  # what _try returns when the store failed (None is a value calls return)


class StoreTrouble:
    def __init__(self, stopping: threading.Event, first_wait: float, stop_patience: float = 0.0):
        """`stop_patience`: how long, after a stop request, a write that decides a job's end is still
        tried (must); `give_up` cuts it short."""
        self.stopping, self.first_wait, self.stop_patience = stopping, first_wait, stop_patience
        self.give_up = threading.Event()
        self.wait = first_wait
        self.failures = 0             # in this run of failures
        self._last_failure = -float("inf")
        self._warned = False          # a failure was logged that no "works again" has answered
        self._stop_deadline: float | None = None
        self._lock = threading.Lock()  # shared with the heartbeat thread

    def failed(self, error: StoreError) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_failure > QUIET:
                self.failures = 0
            self._last_failure = now
            self.failures += 1
            n = self.failures
            if n == 1:
                log.warning("the job store failed: %s; retrying with backoff", error)
            elif n & (n - 1) == 0:  # a power of two: the lines come ever more rarely
                log.warning("the job store failed again (%d failures so far): %s", n, error)
            else:
                return
            self._warned = True

    def ok(self) -> None:
        with self._lock:
            if self._warned:
                log.info("the job store works again")
            self._warned = False
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
        through, so a job is neither lost nor charged an attempt for the store's fault. After a stop
        request it is tried every first_wait for up to stop_patience (from the first such failure
        of this stop; a second stop request, `give_up`, ends it at once), then returns None: the job
        stays running until its lease expires, and the next sweep requeues it, charging an attempt."""
        while (value := self._try(call)) is _FAILED:
            if self.stopping.is_set():
                if self._stop_deadline is None:
                    self._stop_deadline = time.monotonic() + self.stop_patience
                    log.warning("%s: the store failed while stopping; trying again for up to %g s (a second stop "
                                "request gives up)", what, self.stop_patience)
                if self.give_up.is_set() or time.monotonic() >= self._stop_deadline:
                    log.warning("%s: the store failed while stopping; left for a sweep to requeue", what)
                    return None
                self.give_up.wait(self.first_wait)
                continue
            self.pause()
        return value
