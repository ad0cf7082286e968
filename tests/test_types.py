"""The type checker over the families and the Runner (pyproject.toml's [tool.mypy]): the Pipeline and
Options protocols (t2i/families/base.py, options.py) are the types the Runner, the JobSpec and the
registry's records use, so a family that drifts from the contract fails here."""

import subprocess
import sys

from t2i.paths import ROOT


def test_mypy_passes_over_the_families_and_the_runner():
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
