"""`python -m t2i ...`: generate, submit, jobs, cancel, retry, export, presets, download, keys, train-demo,
the benches.

One module per group of commands, each command one small parser builder (`add_<command>(sub)`) and
its `cmd_<command>(args)`; the work itself lives in the package it belongs to (the Runner, the
store and the queue, t2i/assets/, t2i/train/demo.py, t2i/bench/). Every user-facing failure is one
line on stderr and a non-zero exit; a run that fails writes no files (outputs are written only after
the run succeeded, each through a temporary name).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SpecError, T2IError
from .bench import add_bench, add_digitsbench, add_flowersbench, add_shapesbench
from .common import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_FAILED
from .generate import add_generate
from .keys import add_keys
from .queue import add_cancel, add_export, add_jobs, add_retry, add_submit
from .train import add_train_demo
from .weights import add_download, add_presets

# In the order `--help` lists them.
COMMANDS = (add_generate, add_submit, add_jobs, add_cancel, add_retry, add_export, add_presets, add_download,
            add_keys, add_train_demo, add_shapesbench, add_digitsbench, add_flowersbench, add_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m t2i", description="text-to-image: generate, queue, "
                                     "train the offline worlds, benchmark")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, inside the handler, not at exit
        return code
    except BrokenPipeError:
        # `python -m t2i jobs | head -1`: the reader closed the pipe. Stop quietly, as Unix tools do
        # (128 + SIGPIPE), with standard output pointed at /dev/null so that Python's own flush at
        # exit does not raise again (the recipe of the Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (SpecError, T2IError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(e, SpecError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
