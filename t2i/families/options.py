"""What every family's torch-free Options provides, and the model geometry their memory estimates share.

A family's Options (t2i/families/<family>/options.py) owns its job fields: names, defaults, limits,
validation, the batch key (which jobs can share a batch), the total step count and the form fields
the pages show. Pages and the queue import only these modules, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class FormField:
    """One advanced option on the Generate page (and a --flag on the CLI)."""

    name: str
    label: str
    kind: str                  # "int" | "float" | "choice"
    step: float | None = None  # number inputs
    choices: tuple = ()        # "choice" fields
    help: str = ""


class Options(Protocol):
    FAMILY: ClassVar[str]
    FORM: ClassVar[tuple[FormField, ...]]
    LIGHTER: ClassVar[str]     # what to lower after running out of memory, in words

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "Options":
        """Validate raw values (strings or numbers; None or "" = the default) into Options; raise
        SpecError naming the field."""

    def batch_key(self, spec) -> str:
        """Jobs with equal keys can share a batch (same shapes through the model)."""

    def total_steps(self, spec) -> int:
        """The number of steps the job's progress counts to."""

    def describe(self, spec, width: int, height: int) -> str:
        """The job's load in words at the size it is made at, for one-line errors ("64x64 with 8 cutouts")."""

    def used_size(self, spec, preset) -> tuple[int, int]:
        """The size the job is made at (the pipeline's used_size, without building it)."""

    def job_bytes(self, spec, preset) -> int:
        """The job's own peak memory on top of the process and the preset's models (t2i/service/memory.py):
        fitted to measured peaks (BENCHMARKS.md, "Memory per job")."""


# --- memory: the torch-free geometry estimates are made from (t2i/service/memory.py composes them) ----------

FLOAT = 4  # bytes: activations are fp32 on the CPU (bf16 autocast on GPUs only makes them smaller)


def read_config(name: str) -> dict:
    """A model's architecture file, as the builders read it: a path under configs/ or "builtin:..."
    (YAML or JSON; both parse as YAML). Cached: the pages ask on every rerun."""
    return dict(_read_config(name))


@lru_cache(maxsize=64)
def _read_config(name: str) -> dict:
    from omegaconf import OmegaConf

    from ..paths import CONFIG_DIR, resolve_weights_file

    path = Path(resolve_weights_file(name)) if name.startswith("builtin:") else Path(name)
    if not path.is_absolute():
        path = CONFIG_DIR / path
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


@dataclass(frozen=True)
class TamingDecoder:
    """A taming VQGAN decoder's shape: what its activations and attention cost at a given size."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    resolution: int

    @classmethod
    def of(cls, config: str) -> "TamingDecoder":
        dd = read_config(config)["model"]["params"]["ddconfig"]
        return cls(int(dd["ch"]), tuple(int(m) for m in dd["ch_mult"]), int(dd["num_res_blocks"]),
                   tuple(int(r) for r in dd.get("attn_resolutions") or ()), int(dd["resolution"]))

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def activations(self, width: int, height: int) -> float:
        """Channel-pixels of the decoder's res blocks, summed over levels (level i has 1/4**i of the
        pixels): what a backward pass keeps per block."""
        blocks = self.num_res_blocks + 1
        return sum(self.ch * m * blocks * width * height / 4 ** i for i, m in enumerate(self.ch_mult))

    def attention(self, width: int, height: int) -> float:
        """Entries of the attention matrices (tokens x tokens): the mid block's at the lowest level,
        quadratic in pixels (1024x1024 at factor 4 is 65536 tokens: 4.3e9 entries, 17 GB in fp32),
        and any level the config lists in attn_resolutions."""
        levels = len(self.ch_mult)
        tokens = width * height / 4 ** (levels - 1)
        total = tokens ** 2
        for i in range(levels):
            if self.resolution // 2 ** i in self.attn_resolutions:
                total += (self.num_res_blocks + 1) * (width * height / 4 ** i) ** 2
        return total
