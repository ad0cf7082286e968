"""A throwaway PostgreSQL cluster of the chaos run's own (initdb + pg_ctl in a temporary folder, on a
free loopback port), so that restarting it disturbs nobody else's tests.

The binaries are found as tests/setup_postgres.sh finds them (/usr/lib/postgresql/<newest>/bin);
initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """start(), url, restart(mode), stop(). One line (RuntimeError) when a step fails."""

    def __init__(self, folder: Path):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries (pg_ctl) found: install PostgreSQL (tests/setup_postgres.sh)")
        self.folder, self.data, self.port = folder, folder / "data", free_port()
        self.as_root = os.geteuid() == 0
        self.url = f"postgresql://chaos:chaos@127.0.0.1:{self.port}/chaos"

    def _run(self, *argv: str, timeout: float = 120) -> str:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise RuntimeError(f"{argv[0]} failed: {tail[0]}")
        return done.stdout

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        pwfile = self.folder / "pw"
        pwfile.write_text("chaos\n")
        if self.as_root:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", "chaos", "--pwfile", str(pwfile), "-A", "scram-sha-256",
                  "-E", "UTF8", "--no-sync")
        # fsync off: the run tests the service's handling of restarts, not the disk's durability
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                       "fsync = off\nmax_connections = 200\nshared_buffers = 32MB\n")
        self._pg_ctl("start")
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE chaos")

    def _pg_ctl(self, action: str, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-m", mode, "-w",
                  "-t", "60", action)

    def restart(self, mode: str = "fast") -> None:
        """fast: backends are told to stop; immediate: as a crash (recovery from the WAL on start)."""
        self._pg_ctl("restart", mode)

    def ensure_running(self) -> bool:
        """Starts the server if it stopped (a full disk can make it exit); True when it had to."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "status")
            return False
        except RuntimeError:
            self._pg_ctl("start")
            return True

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
