#!/usr/bin/env bash
# Run a command and start it again when it dies: the one restart loop of the service's parts
# (run_executor.sh, run_webapp.sh). A TERM, INT or HUP to this script is passed on to the command,
# which then ends the loop (an executor finishes its step and requeues its job; streamlit closes).
#
#   bash scripts/supervise.sh NAME on-failure|always [--stop-on CODE:WHY]... COMMAND [ARGS...]
#
# on-failure: exit code 0 ends the loop (an executor's --once or --max-jobs); always: every exit is
# restarted (the web app stops only when told). --stop-on: exit code CODE ends the loop too, with one
# line saying WHY, and the script exits with CODE (an executor's 3: its database file was deleted or
# replaced, and a restart would make an empty one there). T2I_RESTART_DELAY (seconds, default 5)
# spaces the restarts, so a command that fails at once (a port in use, a broken store URL) does not spin.
set -uo pipefail
USAGE="usage: bash scripts/supervise.sh NAME on-failure|always [--stop-on CODE:WHY]... COMMAND [ARGS...]"
if [[ $# -lt 3 || ( $2 != on-failure && $2 != always ) ]]; then echo "$USAGE" >&2; exit 2; fi
NAME=$1 POLICY=$2; shift 2
STOP_ON=()
while [[ ${1:-} == --stop-on ]]; do
  [[ ${2:-} =~ ^[0-9]+: ]] || { echo "$USAGE" >&2; exit 2; }
  STOP_ON+=("$2"); shift 2
done
[[ $# -ge 1 ]] || { echo "$USAGE" >&2; exit 2; }
DELAY=${T2I_RESTART_DELAY:-5}

child=0; stopping=0
trap 'stopping=1; [[ $child != 0 ]] && kill -TERM "$child" 2>/dev/null' TERM INT HUP
while :; do
  "$@" &
  child=$!
  wait "$child"; code=$?
  # A trapped signal ends `wait` early: wait again for the command to finish its own shutdown.
  if [[ $stopping == 1 ]]; then wait "$child" 2>/dev/null; exit 0; fi
  [[ $POLICY == on-failure && $code == 0 ]] && exit 0
  for stop in ${STOP_ON[@]+"${STOP_ON[@]}"}; do
    if [[ $code == "${stop%%:*}" ]]; then echo "supervise: $NAME exited with code $code: ${stop#*:}; not restarting" >&2; exit "$code"; fi
  done
  echo "supervise: $NAME exited with code $code; restarting in $DELAY s" >&2
  # In the background and waited for, so that a stop during the pause is handled at once.
  sleep "$DELAY" & child=$!
  wait "$child"
  [[ $stopping == 1 ]] && exit 0
done
