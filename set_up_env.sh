#!/usr/bin/env bash
# Install t2i's environment (once; again only when the requirements change), then run the main job.
#
#   bash set_up_env.sh                      install, then generate a demo image (tiny untrained preset)
#   bash set_up_env.sh "a prompt" [opts]    install, then `python -m t2i generate "a prompt" [opts]`
#   bash set_up_env.sh --install-only       install only (used by tests/run.sh)
#   bash set_up_env.sh --dev ...            also install the test requirements
set -euo pipefail
cd "$(dirname "$0")"

REQS=requirements.txt
if [[ "${1:-}" == "--dev" ]]; then REQS=requirements-dev.txt; shift; fi
INSTALL_ONLY=0
if [[ "${1:-}" == "--install-only" ]]; then INSTALL_ONLY=1; shift; fi

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

if [[ $# -eq 0 ]]; then
  echo "==> generating a demo with the tiny UNTRAINED preset (random weights: the image means nothing)."
  echo "    Real presets: '$VENV/bin/python -m t2i presets', then '$VENV/bin/python -m t2i download NAME'."
  set -- "a lighthouse in a storm, oil painting" --preset tiny-vqgan-untrained --iterations 40 --seed 1
fi
exec "$VENV/bin/python" -m t2i generate "$@"
