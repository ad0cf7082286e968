"""Which of a running job's frames the executor writes to the store, and which it takes back.

Every frame used to go to the store as it came: a 5000-step job saving every step wrote 5000 PNGs
before its GIF, and on a full disk each one was a failed write. Now, per job, as the Runner thins
the frames it keeps for the GIF (t2i/engine/runner.py): at most MAX_FRAMES are stored; at the cap
every second one is deleted and only every second one is written from then on; and each failed
write at the 1st, 2nd, 4th, 8th, ... failure halves what is written too, so a failing store is
asked ever more rarely. The first and the latest stored frame (the page's preview) always stay.
"""

from __future__ import annotations

from .memory import MAX_FRAMES


class FrameThinning:
    def __init__(self, cap: int = MAX_FRAMES):
        self.cap = cap
        self.stride = 1        # every stride-th frame offered is written
        self.offered = 0
        self.failures = 0
        self.stored: list[int] = []   # the steps of the frames in the store, oldest first

    def wanted(self) -> bool:
        """Whether to write the frame offered now (call once per frame the Runner makes)."""
        take = self.offered % self.stride == 0
        self.offered += 1
        return take

    def failed(self) -> None:
        """The write failed (the store's fault)."""
        self.failures += 1
        if self.failures & (self.failures - 1) == 0:
            self.stride *= 2

    def written(self, step: int) -> list[int]:
        """The frame of `step` is stored; returns the steps of stored frames to delete now (none
        until the cap)."""
        self.stored.append(step)
        if len(self.stored) < self.cap:
            return []
        drop = self.stored[1:-1:2]
        gone = set(drop)
        self.stored = [s for s in self.stored if s not in gone]
        self.stride *= 2
        return drop
