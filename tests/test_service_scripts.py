"""The service's shell scripts, run for real on stand-ins: scripts/supervise.sh restarts what dies and
passes a stop on; run_webapp.sh listens on 127.0.0.1 unless T2I_ADDRESS says otherwise; set_up_env.sh
starts whichever part is not running. The stand-ins (a streamlit that answers the health check, a
python that waits for its TERM) take the real programs' places, so each test takes seconds; every wait
is a bounded poll on a condition."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from t2i.paths import ROOT
import polling  # tests/polling.py

pytestmark = pytest.mark.subprocess  # every test runs the scripts

SCRIPTS = ["set_up_env.sh", "run_webapp.sh", "run_executor.sh", "scripts/supervise.sh"]

FAKE_STREAMLIT = f"""#!{sys.executable}
# Stands in for streamlit: notes its arguments, answers the health check where it was told to listen.
import http.server, os, signal, sys
args = sys.argv[1:]
with open(os.environ["T2I_FAKE_LOG"], "a") as log:
    log.write(f"streamlit {{os.getpid()}} {{' '.join(args)}}\\n")
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
server = http.server.HTTPServer((args[args.index("--server.address") + 1],
                                 int(args[args.index("--server.port") + 1])), Health)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
server.serve_forever()
"""

# Stands in for the venv's python running job_executor.py: notes its arguments, waits for its TERM.
# `python -m t2i ...` (set_up_env.sh making the SQLite store) is noted as "cli" and answers at once.
FAKE_PYTHON = """#!/usr/bin/env bash
[[ $1 == -m ]] && { echo "cli $*" >> "$T2I_FAKE_LOG"; exit 0; }
echo "python $$ $*" >> "$T2I_FAKE_LOG"
trap 'kill $! 2>/dev/null; echo "python $$ stopped" >> "$T2I_FAKE_LOG"; exit 0' TERM
sleep 600 & wait
"""


def wait_for(condition, what: str, deadline_s: float = 30):
    return polling.wait_for(condition, what, deadline_s)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tree(tmp_path):
    """A copy of the scripts with stand-ins for the venv's programs, an installed-environment stamp
    (so nothing installs), and a PATH whose tmux and nvidia-smi find nothing: the test never touches
    a real t2i tmux session."""
    for name in SCRIPTS + [p.name for p in ROOT.glob("requirements*.txt")] + ["constraints.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    executable(tmp_path / ".venv/bin/streamlit", FAKE_STREAMLIT)
    executable(tmp_path / ".venv/bin/python", FAKE_PYTHON)
    executable(tmp_path / "bin/tmux", "#!/bin/sh\nexit 1\n")
    executable(tmp_path / "bin/nvidia-smi", "#!/bin/sh\nexit 0\n")
    stamp = subprocess.run(["bash", "-c", "cat requirements*.txt constraints.txt | sha256sum | cut -c1-16"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / f".venv/.installed-{stamp}").write_text("base\n")
    log = tmp_path / "fake.log"
    log.touch()
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", T2I_FAKE_LOG=str(log),
               T2I_PORT=str(free_port()), T2I_RESTART_DELAY="0.1", T2I_EXECUTORS="1",
               T2I_DB=f"sqlite:///{tmp_path / 't2i.db'}")
    env.pop("T2I_ADDRESS", None)
    started = []
    yield tmp_path, env, log, started
    for pid in started + started_pids(log):  # whatever is left of what this test started
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def lines(log: Path, program: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(program + " ")
            and not line.endswith(" stopped")]


def started_pids(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in log.read_text().splitlines() if not line.startswith("cli ")]


def healthy(port: str, host: str = "127.0.0.1") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_supervise_restarts_what_dies_and_passes_a_stop_on(tmp_path):
    starts = tmp_path / "starts"
    # Dies twice, then runs until told to stop, noting the TERM it was passed. The trap is set before
    # the pid is written: a TERM sent as soon as the third pid shows must find it (it once did not).
    command = (f'trap "kill \\$! 2>/dev/null; echo stopped >> {starts}; exit 0" TERM; echo $$ >> {starts}; '
               f'[[ $(wc -l < {starts}) -lt 3 ]] && exit 3; sleep 600 & wait')
    proc = subprocess.Popen(["bash", str(ROOT / "scripts/supervise.sh"), "demo", "always", "bash", "-c", command],
                            env=dict(os.environ, T2I_RESTART_DELAY="0.1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        pids = wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 3 and starts.read_text().split(),
                        "the third start")
        out = stop(proc)
        assert out.count("supervise: demo exited with code 3; restarting in 0.1 s") == 2, out
        assert starts.read_text().split()[3:] == ["stopped"]
        assert not alive(int(pids[2]))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_supervise_on_failure_ends_with_a_clean_exit():
    """An executor's --once or --max-jobs: exit code 0 is the end, not a crash."""
    done = subprocess.run(["bash", str(ROOT / "scripts/supervise.sh"), "executor", "on-failure", "true"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "restarting" not in done.stderr


def test_supervise_stops_on_a_code_it_was_told_to_stop_on(tmp_path):
    """--stop-on CODE:WHY: that exit ends the loop with one line and the same code; others restart."""
    starts = tmp_path / "starts"
    command = f'echo $$ >> {starts}; [[ $(wc -l < {starts}) -lt 2 ]] && exit 1; exit 3'
    done = subprocess.run(["bash", str(ROOT / "scripts/supervise.sh"), "demo", "on-failure",
                           "--stop-on", "4:not this one", "--stop-on", "3:its file is gone", "bash", "-c", command],
                          env=dict(os.environ, T2I_RESTART_DELAY="0.1"), capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and len(starts.read_text().split()) == 2
    assert done.stderr.splitlines() == ["supervise: demo exited with code 1; restarting in 0.1 s",
                                        "supervise: demo exited with code 3: its file is gone; not restarting"]
    bad = subprocess.run(["bash", str(ROOT / "scripts/supervise.sh"), "demo", "always", "--stop-on", "x", "true"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.startswith("usage:")


def test_run_executor_stops_when_the_executor_finds_its_database_gone(tree):
    """Exit 3: the executor found its SQLite file deleted or replaced. Restarted, it would create an
    empty database at the path and take jobs into it; the supervisor stops instead, with one line."""
    root, env, log, started = tree
    executable(root / ".venv/bin/python", """#!/usr/bin/env bash
echo "python $$ $*" >> "$T2I_FAKE_LOG"
echo "ERROR t2i.executor: the database file was replaced; stopping" >&2
exit 3
""")
    done = subprocess.run(["bash", "run_executor.sh", "cpu"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 3, done.stderr
    assert len(lines(log, "python")) == 1
    assert done.stderr.splitlines()[-1] == ("supervise: executor exited with code 3: its database file was deleted "
                                            "or replaced (a restart would create an empty one at the path); "
                                            "not restarting")
    assert "restarting in" not in done.stderr


@pytest.mark.parametrize("address", [None, "0.0.0.0"])
def test_run_webapp_listens_on_localhost_unless_told(tree, address):
    root, env, log, started = tree
    if address:
        env["T2I_ADDRESS"] = address
    proc = subprocess.Popen(["bash", "run_webapp.sh"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started.append(proc.pid)
    try:
        [line] = wait_for(lambda: lines(log, "streamlit"), "the web app")
        args = line.split()[2:]
        assert args[:2] == ["run", "webapp.py"]
        assert args[args.index("--server.address") + 1] == (address or "127.0.0.1")
        assert args[args.index("--server.port") + 1] == env["T2I_PORT"]
        wait_for(lambda: healthy(env["T2I_PORT"]), "the health check")
        stop(proc)
        assert not alive(int(line.split()[1]))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_set_up_env_starts_the_missing_part_and_the_web_app_comes_back(tree):
    """An executor already runs: the script starts the web app beside it (it used to refuse), a second
    run starts nothing, the web app's supervisor brings it back when it dies, and stop ends all."""
    root, env, log, started = tree
    (root / ".run").mkdir()
    executor = subprocess.Popen(["bash", "run_executor.sh", "cpu"], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(executor.pid)
    # Reaped as soon as it ends: set_up_env.sh's stop waits while its pid answers, as a zombie's does.
    threading.Thread(target=executor.wait, daemon=True).start()
    (root / ".run/executor-0.pid").write_text(f"{executor.pid}\n")
    wait_for(lambda: lines(log, "python"), "the executor")

    first = subprocess.run(["bash", "set_up_env.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"executor-0: already running (pid {executor.pid})" in first.stdout and "web: started" in first.stdout
    assert f"t2i is running: http://localhost:{env['T2I_PORT']}" in first.stdout
    assert "did not answer" not in first.stderr, first.stderr
    started.append(int((root / ".run/web.pid").read_text()))
    # The SQLite store is made before the web app starts: a submit right after "t2i is running" finds it.
    noted = log.read_text().splitlines()
    made = noted.index("cli -m t2i jobs --create")
    assert made < next(i for i, line in enumerate(noted) if line.startswith("streamlit "))
    [web] = lines(log, "streamlit")
    assert "--server.address 127.0.0.1" in web and len(lines(log, "python")) == 1

    again = subprocess.run(["bash", "set_up_env.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "web: already running" in again.stdout, again.stdout + again.stderr
    assert len(lines(log, "streamlit")) == 1 and len(lines(log, "python")) == 1

    os.kill(int(web.split()[1]), signal.SIGKILL)  # the web app dies; its supervisor starts another
    wait_for(lambda: len(lines(log, "streamlit")) == 2, "the web app's restart")
    wait_for(lambda: healthy(env["T2I_PORT"]), "the restarted web app's health check")

    stopped = subprocess.run(["bash", "set_up_env.sh", "stop"], cwd=root, env=env, capture_output=True, text=True,
                             timeout=60)
    assert stopped.returncode == 0 and "t2i stopped" in stopped.stdout
    assert f"python {lines(log, 'python')[0].split()[1]} stopped" in log.read_text()  # the TERM reached it
    wait_for(lambda: not any(alive(pid) for pid in started + started_pids(log)), "every part to end")
    assert not list((root / ".run").glob("*.pid"))
