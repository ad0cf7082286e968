#!/usr/bin/env bash
# t2i: install the environment if it is missing, then start the service: the web app and executors,
# each under a supervisor that restarts it if it dies (run_webapp.sh, run_executor.sh).
#
#   bash set_up_env.sh                 install if needed, start whichever parts are not running
#   bash set_up_env.sh stop            stop what it started
#   bash set_up_env.sh --install-only  install only (tests/run.sh uses it; --dev adds the test tools)
#
# Settings: T2I_DB (store URL; default sqlite:///<repo>/t2i.db), T2I_PORT (default 8501),
# T2I_ADDRESS (where the web app listens; default 127.0.0.1, this machine only: put a TLS proxy in
# front, or set 0.0.0.0 for every interface), T2I_EXECUTORS (default: one per GPU, else one on the CPU).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

REQS=requirements.txt
if [[ "${1:-}" == "--dev" ]]; then REQS=requirements-dev.txt; shift; fi
INSTALL_ONLY=0
if [[ "${1:-}" == "--install-only" ]]; then INSTALL_ONLY=1; shift; fi

RUN=.run
stop_service() {
  if command -v tmux >/dev/null && tmux has-session -t t2i 2>/dev/null; then tmux kill-session -t t2i; fi
  local pids=()
  for f in "$RUN"/*.pid; do [[ -f $f ]] && pids+=("$(cat "$f")") && rm -f "$f"; done
  [[ ${#pids[@]} -gt 0 ]] && kill -TERM "${pids[@]}" 2>/dev/null || true
  # Executors finish their current step and put the job back; give them a moment.
  for _ in $(seq 60); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break; sleep 0.5
  done
  echo "t2i stopped"
}
if [[ "${1:-}" == "stop" ]]; then stop_service; exit 0; fi

PY=${PYTHON:-python3}
VENV=.venv
# The stamp names the requirements' hash and holds which set is installed (the dev set includes the base).
stamp="$VENV/.installed-$(cat requirements*.txt constraints.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" || ( $REQS == requirements-dev.txt && "$(cat "$stamp")" != dev ) ]]; then
  echo "==> installing the Python environment in $VENV (first run: a few minutes, about 5 GB)"
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  # --isolated: ignore machine-wide pip settings; some machines point pip at a local CPU-only torch
  # wheel, with which the index's torchvision does not import.
  "$VENV/bin/python" -m pip install --isolated --disable-pip-version-check -q -r "$REQS" -c constraints.txt
  rm -f "$VENV"/.installed-*
  [[ $REQS == requirements-dev.txt ]] && echo dev > "$stamp" || echo base > "$stamp"
fi
[[ $INSTALL_ONLY == 1 ]] && exit 0

export T2I_DB=${T2I_DB:-sqlite:///$ROOT/t2i.db}
export T2I_PORT=${T2I_PORT:-8501} T2I_ADDRESS=${T2I_ADDRESS:-127.0.0.1}
PORT=$T2I_PORT
GPUS=0
command -v nvidia-smi >/dev/null && GPUS=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
N=${T2I_EXECUTORS:-$(( GPUS > 0 ? GPUS : 1 ))}
device_of() { if [[ $GPUS -gt 0 ]]; then echo $(( $1 % GPUS )); else echo cpu; fi; }
TMUX_MODE=0
command -v tmux >/dev/null && [[ $GPUS -gt 0 ]] && TMUX_MODE=1

# Each part is started unless it already runs, so that this script also brings back a part that was
# stopped (or never started) while the others run. Its supervisor restarts it if it dies.
mkdir -p "$RUN/logs"
start_part() {  # NAME COMMAND...
  local name=$1; shift
  if [[ $TMUX_MODE == 1 ]]; then
    if tmux list-windows -t t2i -F '#W' 2>/dev/null | grep -qx "$name"; then echo "  $name: already running"; return; fi
    if tmux has-session -t t2i 2>/dev/null; then tmux new-window -d -t t2i -n "$name" "$*"
    else tmux new-session -d -s t2i -n "$name" "$*"; fi
  else
    local pidfile="$RUN/$name.pid"
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "  $name: already running (pid $(cat "$pidfile"))"; return
    fi
    nohup "$@" >> "$RUN/logs/$name.log" 2>&1 &
    echo $! > "$pidfile"
  fi
  echo "  $name: started"
}
# An SQLite store is made here, before anything starts: the executors and the web app create it when
# they first open it, but a submit typed as soon as "t2i is running" shows could come before that and
# be refused ("no job database"). PostgreSQL's database is the operator's to create.
if [[ $T2I_DB == sqlite:* ]] && ! "$VENV/bin/python" -m t2i jobs --create >/dev/null; then
  echo "could not open or create the job store $T2I_DB (above)" >&2; exit 1
fi
echo "t2i parts:"
start_part web bash run_webapp.sh
for i in $(seq 0 $(( N - 1 ))); do start_part "executor-$i" bash run_executor.sh "$(device_of "$i")"; done
if [[ $TMUX_MODE == 1 ]]; then
  tmux list-windows -t t2i -F '#W' | grep -qx gpus || tmux new-window -d -t t2i -n gpus "watch -n 2 nvidia-smi"
  HOW="tmux attach -t t2i   (one window each: web, executors, nvidia-smi)"
else
  HOW="logs in $RUN/logs/"
fi

# The health check goes to the address the app listens on (this machine, when that is every interface).
case $T2I_ADDRESS in 0.0.0.0|::|"") HOST=127.0.0.1 ;; *:*) HOST="[$T2I_ADDRESS]" ;; *) HOST=$T2I_ADDRESS ;; esac
healthy=0
for _ in $(seq 120); do
  curl -sf "http://$HOST:$PORT/_stcore/health" >/dev/null 2>&1 && healthy=1 && break
  sleep 0.5
done
[[ $healthy == 1 ]] || echo "the web app did not answer at http://$HOST:$PORT within 60 s: see $RUN/logs/web.log" >&2
case $T2I_ADDRESS in
  127.0.0.1|localhost) WHERE="http://localhost:$PORT   (this machine only: T2I_ADDRESS changes that)" ;;
  0.0.0.0|::) WHERE="http://<this host>:$PORT   (every interface)" ;;
  *) WHERE="http://$HOST:$PORT" ;;
esac
cat <<MSG
t2i is running: $WHERE   ($N executor(s), store $T2I_DB)
  $HOW
  submit from the shell:  .venv/bin/python -m t2i submit "a small purple square at the top"   (default preset)
  watch the queue:        .venv/bin/python -m t2i jobs
  stop:                   bash set_up_env.sh stop
MSG
