#!/usr/bin/env bash
# Start one executor and restart it if it crashes; run it once per GPU to scale out.
#
#   bash run_executor.sh [GPU|cpu] [job_executor.py options...]
#
# GPU: an index (sets CUDA_VISIBLE_DEVICES), or "cpu"; default $T2I_GPU, else whatever
# job_executor.py picks (cuda when available). The store is --db URL, else $T2I_DB, else sqlite:///t2i.db.
set -uo pipefail
cd "$(dirname "$0")"
GPU=${1:-${T2I_GPU:-}}
[[ $# -gt 0 ]] && shift
DEVICE=()
if [[ "$GPU" == cpu ]]; then DEVICE=(--device cpu)
elif [[ -n "$GPU" ]]; then export CUDA_VISIBLE_DEVICES=$GPU; DEVICE=(--device cuda:0)
fi

child=0; stopping=0
# Pass a stop on to the executor, which finishes its current step and requeues the job.
trap 'stopping=1; [[ $child != 0 ]] && kill -TERM "$child" 2>/dev/null' TERM INT HUP
while :; do
  .venv/bin/python job_executor.py "${DEVICE[@]}" "$@" &
  child=$!
  wait "$child"; code=$?
  if [[ $stopping == 1 ]]; then wait "$child" 2>/dev/null; exit 0; fi
  [[ $code == 0 ]] && exit 0   # a clean exit (--once, --max-jobs)
  echo "run_executor.sh: executor exited with code $code; restarting in 5 s" >&2
  sleep 5
done
