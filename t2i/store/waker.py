"""One LISTEN per host, and no wake-up herd: how idle executors learn of new work on PostgreSQL.

LISTEN cannot go through PgBouncer in transaction mode (a LISTEN belongs to a server session, which
belongs to whoever runs the next transaction), and one direct LISTEN connection per executor was half
of a fleet's connections. So the executors of one host share one: the first executor that takes the
host's lock file (flock, released by the kernel when its process dies) becomes the host's relay. It
opens one direct connection ($T2I_LISTEN_DB, default the store's own URL), LISTENs, and passes
wake-ups to the host's idle executors over Unix datagram sockets in a folder of its own (one folder
per listened database, so several databases on one host never mix).

No herd: every NOTIFY carries how many jobs it is for (submit 1, a group its size, a sweep the jobs it
requeued). The relay wakes that many idle executors, longest idle first, not all of them. An
executor says it is idle when it starts waiting, with the moment its last claim began; a wake-up
that found nobody idle is kept for a short while as a credit, given to the first executor whose last
claim began before the NOTIFY arrived (its claim may not have seen that job; one whose claim began
after the NOTIFY has seen it, since a NOTIFY is delivered only after its transaction commits).

While the relay listens it touches a file every half second, and the executors, whose wake-ups then
arrive, poll rarely (the executor's LISTENING_POLL instead of max_poll: an idle fleet of 1,000 polled
400 statements a second at 5 s). Nothing is lost when any part fails, because waiting always has a timeout and the executor polls
(its wait doubles up to max_poll): the relay's connection dropping (it wakes every idle executor, as
a wake-up may have been missed, and reconnects with backoff), the relay's process dying (its lock is
released; the next executor that waits takes it over), or a wake-up landing on an executor that had
just found work by polling (the job waits for the next poll). Wake-ups are hints; the claim decides.

Why not a library: nothing maintained relays PostgreSQL notifications to local processes; the parts
used (flock, AF_UNIX datagrams, psycopg's notifies) are the standard library's and the driver's.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import select
import socket
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path

import psycopg

log = logging.getLogger("t2i.store")
CREDIT_SECONDS = 10.0  # a wake-up that found nobody idle is kept this long (longer than max_poll: polls cover it)
RELAY = "relay.sock"
LOCK = "relay.lock"
ALIVE = "relay.alive"  # touched every LOOP seconds while the relay's LISTEN is up
LOOP = 0.5
FRESH = 3.0            # an ALIVE older than this: no relay is listening now


def wake_folder(listen_url: str) -> Path:
    """The host's folder for one listened database: its relay lock, its socket and each executor's."""
    digest = hashlib.sha256(listen_url.encode()).hexdigest()[:16]
    base = os.environ.get("T2I_WAKE_DIR") or tempfile.gettempdir()
    return Path(base) / f"t2i-wake-{os.getuid()}-{digest}"


class HostWaker:
    """One executor's end of the host's wake-ups; it becomes the host's relay when none is running."""

    def __init__(self, listen_url: str, channel: str, connect):
        # connect(url) -> an autocommit psycopg connection, direct to PostgreSQL (never the pooler)
        self.url, self.channel, self.connect = listen_url, channel, connect
        self.folder = wake_folder(listen_url)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.folder / self.name))
        self.sock.setblocking(False)
        self.relay: Relay | None = None

    def listening(self) -> bool:
        """Whether the host's relay is listening now: wake-ups reach this executor, so it may poll
        rarely. A relay that dies uncleanly is noticed within FRESH seconds (its ALIVE goes stale)."""
        try:
            return time.time() - os.stat(self.folder / ALIVE).st_mtime < FRESH
        except OSError:
            return False

    def relay_if_none(self) -> None:
        """Become the host's relay when nobody relays (its LISTEN opens now, before a first claim)."""
        if self.relay is None:
            self.relay = Relay.take(self)

    def wait(self, timeout: float, claim_started: float) -> bool:
        """Wait up to `timeout` seconds for a wake-up; True when woken. claim_started: time.monotonic()
        when this executor's last claim began (CLOCK_MONOTONIC is the same for every process of a host)."""
        self.relay_if_none()
        self._drain()  # wake-ups meant for an earlier wait: that wait's claim has answered them
        self._tell(f"idle {self.name} {claim_started!r}")
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if ready:
            self._drain()
            return True
        self._tell(f"busy {self.name}")  # from now on a wake-up for it would be a wake-up lost
        return False

    def _tell(self, message: str) -> None:
        try:
            self.sock.sendto(message.encode(), str(self.folder / RELAY))
        except OSError:
            pass  # no relay now (it died, or is starting): this wait is a poll, and the next wait may take over

    def _drain(self) -> None:
        try:
            while self.sock.recv(64):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        self.sock.close()
        try:
            os.unlink(self.folder / self.name)
        except OSError:
            pass


class Relay:
    """The host's listener: one direct LISTEN connection; wakes as many idle executors as a NOTIFY has jobs."""

    def __init__(self, waker: HostWaker, lock_fd: int):
        self.waker, self.lock_fd = waker, lock_fd
        self.halt = threading.Event()
        self.guard = threading.Lock()
        self.idle: OrderedDict[str, float] = OrderedDict()  # socket name -> when its last claim began
        self.credits: deque[float] = deque()                # arrival times of wake-ups nobody took
        path = waker.folder / RELAY
        try:
            os.unlink(path)  # a dead relay's socket: we hold the lock, so nobody else is binding it
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.5)
        self.conn = self._first()  # listening before the first wait: a submit right after it wakes someone
        self.threads = [threading.Thread(target=self._listen, daemon=True, name="t2i-relay-listen"),
                        threading.Thread(target=self._registry, daemon=True, name="t2i-relay-idle")]
        for t in self.threads:
            t.start()

    @classmethod
    def take(cls, waker: HostWaker) -> "Relay | None":
        """The relay, when this executor could take the host's lock (nobody else relays); else None."""
        fd = os.open(waker.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        log.info("this executor relays the host's wake-ups (one LISTEN connection)")
        return cls(waker, fd)

    # --- the LISTEN connection --------------------------------------------------------------
    def _first(self):
        conn = None
        try:
            conn = self.waker.connect(self.waker.url)
            conn.execute(f"LISTEN {self.waker.channel}")
            return conn
        except Exception as e:  # noqa: BLE001 - the listening thread tries again; executors poll meanwhile
            log.warning("wake-up relay cannot listen (%s); executors poll until it can", str(e)[:200])
            if conn is not None:
                conn.close()
            return None

    def _listen(self) -> None:
        delay, conn = 0.2, self.conn
        while not self.halt.is_set():
            if conn is None:
                conn = self._first()
                if conn is None:
                    self.halt.wait(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self._wake(None)  # notifications sent while it was away are lost: everyone looks
                delay = 0.2
            try:
                while not self.halt.is_set():
                    _touch(self.waker.folder / ALIVE)
                    for note in conn.notifies(timeout=LOOP):
                        self._wake(_count(note.payload))
            except psycopg.Error as e:
                log.warning("wake-up relay lost its connection (%s); waking every idle executor", str(e)[:200])
                _unlink(self.waker.folder / ALIVE)  # executors poll at their own pace until it listens again
                self._wake(None)
            conn.close()
            conn = None

    # --- idle executors ---------------------------------------------------------------------
    def _registry(self) -> None:
        while not self.halt.is_set():
            try:
                parts = self.sock.recv(256).decode().split()
            except (socket.timeout, OSError, UnicodeDecodeError):
                continue
            with self.guard:
                if parts[:1] == ["busy"] and len(parts) == 2:
                    self.idle.pop(parts[1], None)
                elif parts[:1] == ["idle"] and len(parts) == 3:
                    self._idle(parts[1], float(parts[2]))

    def _idle(self, name: str, claim_started: float) -> None:
        """An executor waits: a credit its last claim may have missed wakes it now; else it queues."""
        now = time.monotonic()
        while self.credits and self.credits[0] < now - CREDIT_SECONDS:
            self.credits.popleft()
        missed = next((t for t in self.credits if t > claim_started), None)
        if missed is not None:
            self.credits.remove(missed)
            self._send(name)
            return
        self.idle.pop(name, None)
        self.idle[name] = claim_started

    def _wake(self, count: int | None) -> None:
        """Wake `count` idle executors, longest idle first (None: all); the rest become credits."""
        with self.guard:
            names = list(self.idle) if count is None else list(self.idle)[:count]
            for name in names:
                del self.idle[name]
                self._send(name)
            if count is not None:
                self.credits.extend([time.monotonic()] * min(count - len(names), 10_000))

    def _send(self, name: str) -> None:
        try:
            self.sock.sendto(b"w", str(self.waker.folder / name))
        except OSError:
            pass  # that executor is gone (its socket with it)

    def stop(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(timeout=5)
        _unlink(self.waker.folder / ALIVE)
        self._wake(None)  # the waiting executors look now, and one of them relays from now on
        self.sock.close()
        _unlink(self.waker.folder / RELAY)
        os.close(self.lock_fd)  # releases the lock last: the next relay binds a fresh socket


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError:
        pass  # then executors poll at their own pace: slower pickups, nothing lost


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _count(payload: str) -> int:
    """Jobs a NOTIFY is for; an empty or odd payload (another client's, an older t2i's) counts as 1."""
    try:
        return max(1, min(int(payload), 10_000))
    except ValueError:
        return 1
