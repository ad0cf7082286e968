#!/usr/bin/env bash
# Start one executor and restart it if it crashes (scripts/supervise.sh; a clean exit, after --once
# or --max-jobs, is not restarted, nor exit 3: the executor found its SQLite file deleted or replaced,
# and a restarted one would create an empty database at the path); run it once per GPU to scale out.
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

exec bash scripts/supervise.sh executor on-failure \
  --stop-on "3:its database file was deleted or replaced (a restart would create an empty one at the path)" \
  .venv/bin/python job_executor.py "${DEVICE[@]}" "$@"
