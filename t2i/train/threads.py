"""How many CPU threads the trainers of the offline worlds use.

One thread: the files' bytes then do not depend on the machine's core count (float reductions split
across threads add in another order), and on the shared 2-core machines two threads ran a UNet
training step 2-20x slower than one whenever another process was busy (threads spinning on each
other). It also lets two worlds train side by side, one per core.
"""

from __future__ import annotations

import contextlib

import torch

THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int = THREADS):
    """Run with n intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
