"""The processes under test: executors (job_executor.py) and the web app (`streamlit run webapp.py`),
each started as run_executor.sh and run_webapp.sh start them, restarted after it dies (as
scripts/supervise.sh would), and watched: peak RSS from /proc, and an exit nobody caused.

A process the chaos run killed is expected to die; one that exits by itself, or leaves a traceback
in its log, is a finding.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESTART_DELAY = 1.0  # scripts/supervise.sh's default pause before a restart
# The executor logs a job's end only once the store took the final write (executor.py's _ended).
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")  # "TypeError: ...", at a line's start
ENDED = re.compile(r"t2i\.executor: job (\d+): (done|failed|cancelled)\b")


@dataclass
class Member:
    role: str           # "executor" or "web"
    index: int
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    killed: bool = False          # the chaos run killed it: its death is expected
    starts: int = 0
    own_exits: list[str] = field(default_factory=list)  # exits nobody caused, with their code
    spawned: float = 0.0          # time.monotonic() of the last start
    refused_starts: int = 0       # starts refused by a database that was restarting (not a violation)
    peak_rss_mb: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.role} {self.index}" if self.role == "executor" else self.role


def rss_mb(pid: int) -> float | None:
    """The resident set of a process and its children (streamlit's are none; an executor's none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


class Fleet:
    def __init__(self, workdir: Path, db_url: str, executors: int, web_port: int, lease: float):
        self.env = {**os.environ, "T2I_DB": db_url, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "T2I_CHECKPOINTS": str(workdir / "no-checkpoints")}
        execs = [Member("executor", i, [sys.executable, "job_executor.py", "--db", db_url, "--device", "cpu",
                                        "--poll", "0.2", "--lease", f"{lease:g}", "--cache-size", "3"],
                        workdir / f"executor-{i}.log") for i in range(executors)]
        web = Member("web", 0, [sys.executable, "-m", "streamlit", "run", "webapp.py", "--server.address",
                                "127.0.0.1", "--server.port", str(web_port), "--server.headless", "true",
                                "--browser.gatherUsageStats", "false"], workdir / "web.log")
        self.members = execs + [web]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True, name="chaos-fleet")
        self.outages: list[list[float]] = []  # [start, end] of each database restart (end inf while on)

    @contextlib.contextmanager
    def database_restarting(self):
        """Marks a restart of the database the fleet uses, so that an executor started just before it and
        refused a connection (it exits 2 at once, by design: a wrong URL is one line at start) counts as
        what supervise.sh makes of it, a restart, and not as an exit nobody caused."""
        window = [time.monotonic(), math.inf]
        self.outages.append(window)
        try:
            yield
        finally:
            window[1] = time.monotonic()

    def _refused_by_restart(self, m: Member, code: int) -> bool:
        if m.role != "executor" or code != 2:
            return False
        now = time.monotonic()
        if not any(start <= now and end >= m.spawned for start, end in self.outages):
            return False
        tail = m.log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return tail[0].startswith("error:") and "connect" in tail[0].lower()

    def start(self) -> None:
        for m in self.members:
            self._spawn(m)
        self.watcher.start()

    def _spawn(self, m: Member) -> None:
        with open(m.log, "a") as log:
            m.proc = subprocess.Popen(m.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        m.killed, m.starts, m.spawned = False, m.starts + 1, time.monotonic()

    def executors(self) -> list[Member]:
        return [m for m in self.members if m.role == "executor"]

    @property
    def web(self) -> Member:
        return self.members[-1]

    def kill(self, m: Member) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost host would: no stop at a step boundary."""
        with self.lock:
            if m.proc is not None and m.proc.poll() is None:
                m.killed = True
                m.proc.send_signal(signal.SIGKILL)

    def _watch(self) -> None:
        """Every 0.2 s: peak RSS of each process; restart what died (after RESTART_DELAY)."""
        while not self.stopping.wait(0.2):
            for m in self.members:
                with self.lock:
                    code = m.proc.poll() if m.proc is not None else None
                    if code is None:
                        rss = rss_mb(m.proc.pid) if m.proc is not None else None
                        m.peak_rss_mb = max(m.peak_rss_mb, rss or 0.0)
                        continue
                    if self._refused_by_restart(m, code):
                        m.refused_starts += 1
                    elif not m.killed:
                        m.own_exits.append(f"{m.name} exited by itself with code {code}")
                    m.proc = None
                time.sleep(RESTART_DELAY)
                with self.lock:
                    if not self.stopping.is_set():
                        self._spawn(m)

    def running(self) -> bool:
        return all(m.proc is not None and m.proc.poll() is None for m in self.members)

    def pids(self) -> list[int]:
        return [m.proc.pid for m in self.members if m.proc is not None]

    def stop(self) -> None:
        """SIGTERM to each (the executor stops at a step boundary and requeues), then SIGKILL."""
        self.stopping.set()
        self.watcher.join(10)
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.terminate()
        deadline = time.monotonic() + 30
        for m in self.members:
            if m.proc is None:
                continue
            try:
                m.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()

    def tracebacks(self) -> list[str]:
        """The line naming the exception after each traceback in any process's log (Streamlit draws
        its tracebacks in a box, coloured: the colours are stripped first)."""
        found = []
        for m in self.members:
            text = m.log.read_text(errors="replace") if m.log.exists() else ""
            lines = [ANSI.sub("", line) for line in text.splitlines()]
            for i, line in enumerate(lines):
                if "Traceback (most recent call last)" in line:
                    last = next((x for x in lines[i + 1:] if EXCEPTION.match(x)), "?")
                    found.append(f"{m.name}: {last.strip()[:160]} ({m.log.name} line {i + 1})")
        return found

    def ends(self) -> dict[int, list[str]]:
        """job id -> the ends the executors' logs say they wrote (a SIGKILL may leave one unlogged,
        never log one twice)."""
        found: dict[int, list[str]] = {}
        for m in self.executors():
            for match in ENDED.finditer(m.log.read_text(errors="replace") if m.log.exists() else ""):
                found.setdefault(int(match[1]), []).append(match[2])
        return found
