"""The executor's heartbeat: one thread that keeps every running job's lease alive and notices the
leases it lost."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ..store import Lease, StoreError
from ..store.retry import StoreTrouble

log = logging.getLogger("t2i.executor")


class Holder(Protocol):
    """Whose leases they are and how long each lasts (the executor's ExecutorConfig)."""

    worker_id: str
    lease: float


class Heartbeat(threading.Thread):
    """Extends the leases of every running job every lease/3 seconds, all in one statement
    (heartbeat_all), and notices leases that were lost (swept, cancelled from elsewhere, taken over).
    It shares the executor's store, whose connections are safe to share between threads; a failing
    store is retried at the next beat."""

    def __init__(self, cfg: Holder, store, trouble: StoreTrouble):
        super().__init__(name="heartbeat", daemon=True)
        self.cfg, self.store, self.trouble = cfg, store, trouble
        self._leases: set[Lease] = set()
        self._lost: set[Lease] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases.add(lease)

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)
            self._lost.discard(lease)

    def lost(self, lease: Lease) -> bool:
        with self._lock:
            return lease in self._lost

    def run(self) -> None:
        while not self._stop_event.wait(self.cfg.lease / 3):
            self.beat()

    def beat(self) -> None:
        """One beat: every held lease extended in one statement; the lost ones noted."""
        with self._lock:
            leases = list(self._leases - self._lost)
        if not leases:
            return
        try:
            beats = self.store.heartbeat_all(self.cfg.worker_id, leases, self.cfg.lease)
        except StoreError as error:  # the next beat may succeed; the main loop deals with a gone file
            self.trouble.failed(error)
            return
        except Exception:  # noqa: BLE001 - a bug must not stop the next beats
            log.exception("heartbeat for jobs %s failed", sorted(lease.job_id for lease in leases))
            return
        with self._lock:
            self._lost.update(lease for lease in leases if not beats[lease.job_id].alive)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
