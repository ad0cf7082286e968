#!/usr/bin/env bash
# One run on a GPU machine fills every figure BENCHMARKS.md marks unmeasured, in at most 8 minutes:
# the guided bench against the reference loop at 1/4/16 jobs (and its peak memory per job), diffusion
# batching at 1/4/16 jobs with and without step caching, LDM and GLIDE steps/s, each in fp32 and bf16
# (every family runs its heavy passes under the Runner's autocast). It only runs `python -m t2i bench`
# (random weights of each preset's real architecture: nothing to download) and merges the tables the
# bench prints into one markdown table. Run it from the repository root, in the project's environment
# (PYTHON=... to name the interpreter; default .venv/bin/python).
#
#   scripts/device_check.sh [--tiny] [TABLE.md]
#
# TABLE.md: where the table goes (default: $OUT/device_check.md, else ./device_check.md). --tiny (or
# T2I_DEVICE_CHECK_TINY=1): the same figures on the tiny untrained presets on the CPU in seconds, so
# that the tests run the whole script. T2I_DEVICE_CHECK_BUDGET: the seconds all commands may take
# (default 480); a command that would start past it is listed as skipped, one that runs over its own
# limit as timed out, and the table is written either way.
set -uo pipefail

tiny="${T2I_DEVICE_CHECK_TINY:-}"
table=""
for arg in "$@"; do
    case "$arg" in
        --tiny) tiny=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "device_check.sh: unknown option $arg (use --tiny, or a path for the table)" >&2; exit 2 ;;
        *) table="$arg" ;;
    esac
done
[ -n "$table" ] || table="${OUT:-.}/device_check.md"
# The project's environment (set_up_env.sh; --reference needs requirements-bench.txt's kornia).
python="${PYTHON:-}"
[ -n "$python" ] || { [ -x .venv/bin/python ] && python=.venv/bin/python; } || python=python
budget="${T2I_DEVICE_CHECK_BUDGET:-480}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# label | seconds this command may take | bench arguments. The diffusion presets' cache table runs
# interval 0 (off) and 3 in turn, three rounds, the median kept, so their ratio holds within the run.
if [ -n "$tiny" ]; then
    device=cpu
    commands=(
        "guided|30|--preset tiny-vqgan-untrained --cutn 4 --steps 1 --batch 1,2 --reference"
        "guided bf16|30|--preset tiny-vqgan-untrained --cutn 4 --steps 1 --batch 1 --precision bf16"
        "diffusion|30|--preset tiny-diffusion-untrained --steps 1 --batch 1,2 --reference"
        "diffusion, step caching|30|--preset tiny-diffusion-untrained --steps 3 --batch 1,2 --cache 0,3"
        "LDM|30|--preset tiny-ldm-text2im-untrained --steps 1 --batch 1 --cache 0,3"
        "GLIDE|30|--preset tiny-glide-untrained --steps 1 --batch 1"
    )
else
    device=cuda
    # Most wanted first: a command that would start past the budget is skipped, not the table.
    vqgan="--preset vqgan_imagenet_f16_16384 --size 304 304 --cutn 32 --steps 20 --batch 1,4,16"
    commands=(
        "guided VQGAN fp32|70|$vqgan --precision fp32 --reference"
        "guided VQGAN bf16|60|$vqgan --precision bf16"
        "digits step caching fp32|30|--preset digits --steps 30 --batch 1,4,16 --cache 0,3 --rounds 3"
        "shapes-ldm step caching fp32|30|--preset shapes-ldm --steps 30 --batch 1,4,16 --cache 0,3 --rounds 3"
        "LDM 256 step caching fp32|90|--preset ldm-text2im-large-256 --steps 6 --batch 1,4,16 --cache 0,3"
        "LDM 256 step caching bf16|90|--preset ldm-text2im-large-256 --steps 6 --batch 1,4,16 --cache 0,3 --precision bf16"
        "GLIDE 256 fp32|80|--preset glide-256 --steps 3 --batch 1,4,16"
        "GLIDE 256 bf16|80|--preset glide-256 --steps 3 --batch 1,4,16 --precision bf16"
        "digits fp32|30|--preset digits --steps 20 --batch 1,4,16 --reference"
        "shapes-ldm fp32|30|--preset shapes-ldm --steps 20 --batch 1,4,16 --reference"
        "guided BigGAN fp32|40|--preset biggan-deep-256 --cutn 32 --steps 20 --batch 1,4,16"
        "digits step caching bf16|30|--preset digits --steps 30 --batch 1,4,16 --cache 0,3 --rounds 3 --precision bf16"
        "shapes-ldm step caching bf16|30|--preset shapes-ldm --steps 30 --batch 1,4,16 --cache 0,3 --rounds 3 --precision bf16"
    )
fi

start=$SECONDS
i=0
for entry in "${commands[@]}"; do
    i=$((i + 1))
    IFS='|' read -r label limit args <<< "$entry"
    echo "$label" > "$work/$i.label"
    echo "python -m t2i bench $args --device $device" > "$work/$i.command"
    echo "$limit" > "$work/$i.limit"
done

if [ -n "$tiny" ]; then
    # One process for every command: on a small CPU, importing torch and the model libraries six times
    # would take longer than the tiny benches themselves (so RSS peaks there are the process's so far).
    "$python" - "$work" "$i" "$budget" <<'PY'
import contextlib, pathlib, shlex, sys, time
from t2i.cli import main

work, count, budget = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
for i in range(1, count + 1):
    argv = shlex.split((work / f"{i}.command").read_text())[3:]  # after "python -m t2i"
    with open(work / f"{i}.out", "w") as out:
        if time.monotonic() - start + float((work / f"{i}.limit").read_text()) > budget:
            print(f"skipped: the budget of {budget:g} s would be exceeded", file=out)
            continue
        with contextlib.redirect_stdout(out):
            code = main(argv)
        if code:
            print(f"failed (exit {code})", file=out)
PY
else
    for n in $(seq 1 "$i"); do
        limit="$(cat "$work/$n.limit")"
        if [ $((SECONDS - start + limit)) -gt "$budget" ]; then
            echo "skipped: the budget of ${budget} s would be exceeded" > "$work/$n.out"
            continue
        fi
        echo "[$((SECONDS - start)) s] $(cat "$work/$n.label")" >&2
        # shellcheck disable=SC2046  # the arguments are words on purpose
        timeout "$limit" "$python" -m t2i $(cut -d' ' -f4- "$work/$n.command") > "$work/$n.out" 2> "$work/$n.err"
        rc=$?
        if [ $rc -eq 124 ]; then
            echo "timed out after ${limit} s" >> "$work/$n.out"
        elif [ $rc -ne 0 ]; then
            echo "failed (exit $rc): $(grep -v Warning "$work/$n.err" | tail -1)" >> "$work/$n.out"
        fi
    done
fi

mkdir -p "$(dirname "$table")"
"$python" - "$work" "$i" "$((SECONDS - start))" "$device" > "$table" <<'PY'
"""Merge the bench outputs into one table (parsing only: every figure is the bench's own)."""
import pathlib
import re
import subprocess
import sys

work, count, seconds, device = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


rows, notes = [], []
for i in range(1, count + 1):
    label = (work / f"{i}.label").read_text().strip()
    out = work / f"{i}.out"
    text = out.read_text() if out.exists() else "failed: no output (the run stopped before this command)"
    notes.append(f"{i}. `{(work / f'{i}.command').read_text().strip()}`")
    header, stage, ratios, peaks = None, "", {}, {}
    for line in text.splitlines():
        if line.startswith("stage 2"):
            stage = " (upsampler)"
        elif line.startswith("| jobs in batch"):
            header = cells(line)
        elif line.startswith("| ---") or not line.startswith("|"):
            m = re.match(r"reference loop \((.*)\): ([\d.]+) steps/s, peak memory (.*)", line)
            if m:
                rows.append([f"{label}{stage}", "reference loop, 1", "", m[2], "", "", m[3], str(i)])
            m = re.match(r"ratio to the reference, (\d+) job", line)
            if m:
                ratios[m[1]] = line.split(": ")[-1].replace(" job-steps/s", "")
            if re.match(r"(skipped|timed out|failed)", line):
                rows.append([label, "", "", line, "", "", "", str(i)])
        elif header:
            row = dict(zip(header, cells(line)))
            jobs, peak = row["jobs in batch"], row["peak memory"]
            peaks.setdefault((stage, row.get("cache interval", "")), {})[jobs] = peak
            rows.append([f"{label}{stage}", jobs, row.get("cache interval", ""), row["job-steps/s"],
                         row["ms per batch step"], row.get(next((h for h in header if h.startswith("vs ")), ""), ""),
                         peak, str(i)])
    for r in rows:
        if r[-1] == str(i) and r[1] in ratios and not r[5]:
            r[5] = f"{ratios[r[1]]} the reference"
    # Peak memory per job: what each job past the first adds (the models are in every batch's peak).
    for (stage_, cache), by_jobs in peaks.items():
        nums = {int(j): float(p.split()[0]) for j, p in by_jobs.items() if p.split()[0].replace(".", "").isdigit()}
        if len(nums) > 1:
            lo, hi = min(nums), max(nums)
            per = (nums[hi] - nums[lo]) / (hi - lo) * 1024
            what = " ".join(by_jobs[str(hi)].split()[2:3])  # RSS or GPU
            rows.append([f"{label}{stage_}", f"per job ({lo} to {hi})", cache, "", "", "", f"{per:.0f} MiB {what}", str(i)])

try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10).stdout.strip()
except (OSError, subprocess.SubprocessError):
    gpu = ""
print(f"## Device check ({device}{', ' + gpu if gpu else ''}; {seconds} s in all; scripts/device_check.sh)\n")
print("| figure | jobs | cache interval | job-steps/s | ms per batch step | ratio | peak memory | command |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print("\n".join(notes))
PY
echo "table written to $table" >&2
