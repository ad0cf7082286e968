"""scripts/device_check.sh in its tiny mode: the whole script (every bench command, the merged table)
on the CPU, so the day a GPU machine is lent one run of it fills BENCHMARKS.md's unmeasured figures."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"

pytestmark = pytest.mark.subprocess


def run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| figure", "| ---"))]


def test_the_tiny_mode_writes_one_table_with_every_figure(tmp_path):
    table = tmp_path / "deep" / "check.md"
    done = run("--tiny", str(table))
    assert done.returncode == 0, done.stderr
    text = table.read_text()
    assert text.count("| figure |") == 1 and "(cpu" in text
    got = rows(text)
    assert not [r for r in got if re.match(r"(skipped|timed out|failed)", r[3])], got
    figures = {r[0] for r in got}
    assert {"guided", "guided bf16", "diffusion", "diffusion, step caching", "LDM", "GLIDE",
            "GLIDE (upsampler)"} <= figures
    numbers = [r for r in got if r[1] in ("1", "2")]
    assert all(float(r[3]) > 0 for r in numbers)  # every job-steps/s is a figure the bench measured
    assert any(r[1] == "reference loop, 1" for r in got if r[0] == "guided")
    assert any(r[5].endswith("the reference") for r in got if r[0] == "guided" and r[1] == "2")
    cached = {r[2]: r for r in got if r[0] == "diffusion, step caching" and r[1] == "2"}
    assert set(cached) == {"0", "3"} and cached["0"][5] == "1.00x"
    assert any(r[1].startswith("per job") and "MiB" in r[6] for r in got)
    assert "python -m t2i bench --preset tiny-glide-untrained" in text


def test_a_command_past_the_budget_is_listed_as_skipped_and_the_table_still_written(tmp_path):
    table = tmp_path / "check.md"
    done = run(str(table), T2I_DEVICE_CHECK_TINY="1", T2I_DEVICE_CHECK_BUDGET="0")
    assert done.returncode == 0, done.stderr
    got = rows(table.read_text())
    assert len(got) == 6 and all(r[3].startswith("skipped: the budget of 0 s") for r in got)


def test_an_unknown_option_is_one_line():
    done = run("--fast")
    assert done.returncode == 2 and done.stderr.strip() == \
        "device_check.sh: unknown option --fast (use --tiny, or a path for the table)"
