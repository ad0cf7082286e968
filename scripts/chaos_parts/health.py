"""The web app's health check (GET /_stcore/health, as run_webapp.sh's supervisor and a load balancer
ask it), every 0.25 s over real HTTP, throughout the run.

While the web app is down because the chaos run killed it, failures are expected: from the kill to
its first answer after the restart the checks count as recovery time, not as latencies. Any other
check that fails or takes longer than the bound is a violation.
"""

from __future__ import annotations

import threading
import time
import urllib.request

INTERVAL_S = 0.25


class Health:
    def __init__(self, port: int, bound_s: float):
        self.url, self.bound_s = f"http://127.0.0.1:{port}/_stcore/health", bound_s
        self.latencies: list[float] = []
        self.slow: list[str] = []       # checks over the bound, or failed, while the app was up
        self.recoveries: list[float] = []
        self.down_since: float | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="chaos-health")

    def expect_down(self) -> None:
        with self.lock:
            if self.down_since is None:
                self.down_since = time.monotonic()

    def check(self) -> tuple[bool, float, str]:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.bound_s * 2) as r:
                r.read()
                ok, what = r.status == 200, f"HTTP {r.status}"
        except OSError as e:
            ok, what = False, f"{type(e).__name__}: {e}"
        return ok, time.monotonic() - start, what

    def wait_up(self, deadline_s: float) -> bool:
        """The app answered within deadline_s (at the start, and before the final checks)."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.check()[0]:
                return True
            time.sleep(INTERVAL_S)  # polling a process's start-up
        return False

    def _loop(self) -> None:
        while not self.stop.wait(INTERVAL_S):
            started = time.monotonic()
            ok, seconds, what = self.check()
            with self.lock:
                if self.down_since is not None:
                    # Only a check sent after the kill shows the app back: one already in flight when
                    # expect_down() was called can still be answered by the process about to die.
                    if ok and started > self.down_since:
                        self.recoveries.append(time.monotonic() - self.down_since)
                        self.down_since = None
                    continue
                at = time.monotonic() - self.t0
                if not ok:
                    self.slow.append(f"at {at:.0f} s: {what[:100]}")
                elif seconds > self.bound_s:
                    self.slow.append(f"at {at:.0f} s: answered in {seconds:.1f} s")
                if ok:
                    self.latencies.append(seconds)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(self.bound_s * 3)
