"""A local PgBouncer in transaction mode in front of a PostgreSQL server, for the tests and the fleet
simulation (Debian's `pgbouncer` package: tests/setup_pgbouncer.sh installs it).

    python scripts/local_pgbouncer.py --upstream postgresql://u:p@127.0.0.1:5432/postgres --folder /tmp/pgb
        starts one on a free port, prints its URL (same user, password and database), and keeps it
        running until interrupted

Every database of the upstream server is reachable through it (the `*` entry), so a database the
tests create later needs no reconfiguration. Clients authenticate to PgBouncer with the upstream
user's password (auth_file), and PgBouncer logs in to PostgreSQL with the same (SCRAM needs the plain
password here). Run as root, PgBouncer refuses to start unless told which user to become: it becomes
`postgres`, and its folder is handed to that user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPgBouncer:
    def __init__(self, upstream: str, folder: Path, *, port: int | None = None, pool_size: int = 20,
                 max_client_conn: int = 4000):
        self.upstream, self.folder = upstream, Path(folder)
        self.port = port or free_port()
        self.pool_size, self.max_client_conn = pool_size, max_client_conn
        self.proc: subprocess.Popen | None = None
        u = urlsplit(upstream)
        self.user, self.password = unquote(u.username or ""), unquote(u.password or "")
        self.host, self.upstream_port = u.hostname or "127.0.0.1", u.port or 5432

    def url(self, upstream_db_url: str | None = None) -> str:
        """The URL of `upstream_db_url`'s database (default the upstream's) through this PgBouncer."""
        parts = urlsplit(upstream_db_url or self.upstream)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()

    def _write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        ini = self.folder / "pgbouncer.ini"
        (self.folder / "userlist.txt").write_text(f'"{self.user}" "{self.password}"\n')
        become = "user = postgres\n" if os.getuid() == 0 else ""
        ini.write_text(
            "[databases]\n"
            f"* = host={self.host} port={self.upstream_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.folder / 'userlist.txt'}\n"
            "pool_mode = transaction\nlog_connections = 0\nlog_disconnections = 0\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = {self.max_client_conn}\n"
            f"max_db_connections = {self.pool_size}\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\npidfile = {self.folder / 'pgbouncer.pid'}\n"
            # psycopg sends none of these, but other clients (psql, the web app's libraries) may
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"{become}")
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            for parent in self.folder.parents:  # pytest's tmp folders are 0700: postgres must reach its files
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
        return ini

    def start(self, timeout: float = 20.0) -> "LocalPgBouncer":
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed: run bash tests/setup_pgbouncer.sh")
        ini = self._write_config()
        # Its output to a file, never a pipe nobody reads: PgBouncer logs every login to stderr too, and
        # once a pipe's 64 KiB are full it blocks in write() and serves nobody (seen at 460 clients).
        with open(self.folder / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen([binary, str(ini)], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)  # polling the port with a deadline: pgbouncer has no readiness signal
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port} within {timeout:g} s: {self.log()[-500:]}")

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM): every client connection is dropped, as in a crash or a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        text = ""
        for name in ("stderr.log", "pgbouncer.log"):
            try:
                text += (self.folder / name).read_text(errors="replace")
            except OSError:
                pass
        return text

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="postgresql://user:password@host:port/db")
    ap.add_argument("--folder", type=Path, required=True, help="its configuration and log")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--pool-size", type=int, default=20, help="server connections per database and user")
    args = ap.parse_args(argv)
    bouncer = LocalPgBouncer(args.upstream, args.folder, port=args.port, pool_size=args.pool_size).start()
    print(bouncer.url(), flush=True)
    try:
        while bouncer.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        bouncer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
