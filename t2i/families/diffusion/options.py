"""The diffusion family's job options (torch-free): sampler, steps, guidance scale, samples per job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import SpecError
from ...paths import component_weights
from ...checks import choice, given, real, shown, whole
from ..options import FLOAT, FormField, TamingDecoder, read_config

# ancestral, DDIM (eta), DPM-Solver++ (2nd-order multistep), PLMS (the LDM paper's pseudo linear multistep)
SAMPLERS = ("ddpm", "ddim", "dpm++", "plms")
# Samplers over sigmas (k-diffusion's): our loop's previews and per-job schedule steps assume alphas, so
# they are refused by name rather than run wrong.
SIGMA_SAMPLERS = ("euler", "euler_a", "euler-a", "heun", "lms", "dpm2", "dpm2_a")
MAX_STEPS = 1000                      # the training schedule's length
GUIDANCE_RANGE = (0.0, 30.0)          # 0: unconditional, 1: conditional without guidance
ETA_RANGE = (0.0, 1.0)
SAMPLES_RANGE = (1, 64)
# Step caching (deepcache.py): one full UNet step, then cache - 1 steps of its shallow branch; 0 or 1 is off.
# Beyond 10 the kept features are too stale for any of our presets (BENCHMARKS.md, "Step caching").
CACHE_RANGE = (0, 10)
DEFAULTS = dict(sampler="ddim", steps=50, guidance=3.0, eta=0.0, num_samples=1, cache=0)

# Memory per job, fitted to peak RSS measured on the CPU (BENCHMARKS.md, "Memory per job"). The UNet
# runs without gradients, so what a step holds is its skip connections (bytes per channel-pixel of
# them, per UNet row); attention goes through torch's scaled_dot_product_attention, which is not
# quadratic on the CPU or on GPUs. A taming codec's decode (every preview and the end) holds its
# largest activations and its mid-block attention matrices (scores, scaled, softmax) per sample.
PER_SKIP = 26.0
PER_DECODE = 6.0
PER_DECODE_ATTENTION = 3 * FLOAT
JOB_FLOOR = 32 * 2**20


@dataclass(frozen=True)
class DiffusionOptions:
    sampler: str
    steps: int
    guidance: float
    eta: float
    num_samples: int
    cache: int = 0                    # step caching interval (0 or 1: every step runs the whole UNet)
    # Set by the preset, not the user: the steps of a second (upsampler) stage (GlideOptions, glide-256).
    upsample_steps: int = 0

    FAMILY: ClassVar[str] = "diffusion"
    # What a preset may narrow or fix (its YAML's `samplers:`, `defaults.max_steps`, an upsampler's
    # steps), passed in by make_spec.
    PRESET_LIMITS: ClassVar[tuple[str, ...]] = ("samplers", "max_steps", "upsample_steps")
    LIGHTER: ClassVar[str] = "the size or the number of samples"
    FORM: ClassVar[tuple[FormField, ...]] = (FormField("sampler", "Sampler", "choice", choices=SAMPLERS,
                      help="ddpm: ancestral; ddim: deterministic at eta 0; dpm++: good images in few steps; "
                           "plms: the LDM paper's sampler"),
            FormField("steps", "Steps", "int", step=10),
            FormField("guidance", "Guidance scale", "float", step=0.5,
                      help="0: ignore the prompt; 1: conditional, no guidance; higher: follow the prompt harder"),
            FormField("num_samples", "Samples", "int", step=1, help="1..64 images of the prompt, shown as a grid"),
            FormField("cache", "Step caching", "int", step=1,
                      help="N: the whole UNet every N-th step, only its shallow part between (faster, "
                           "slightly different picture); 0 or 1: off"))

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "DiffusionOptions":
        d = {**DEFAULTS, **defaults}
        sampler = _sampler(given(raw, d, "sampler"), tuple(d.get("samplers") or SAMPLERS))
        eta = real("eta", given(raw, d, "eta"), *ETA_RANGE)
        if eta and sampler != "ddim":
            raise SpecError("eta", f"applies to the ddim sampler only, not {sampler}")
        if raw.get("upsample_steps") not in (None, ""):
            raise SpecError("upsample_steps", "is the preset's (its upsampler's respacing), not an option")
        max_steps = min(limits.max_iterations, MAX_STEPS, int(d.get("max_steps") or MAX_STEPS))
        return cls(sampler=sampler,
                   steps=whole("steps", given(raw, d, "steps"), 1, max_steps),
                   guidance=real("guidance", given(raw, d, "guidance"), *GUIDANCE_RANGE),
                   eta=eta,
                   num_samples=whole("num_samples", given(raw, d, "num_samples"), *SAMPLES_RANGE),
                   cache=whole("cache", given(raw, d, "cache"), *CACHE_RANGE),
                   upsample_steps=int(d.get("upsample_steps") or 0))

    def batch_key(self, spec) -> str:
        # One UNet call takes any mix of samplers, steps, guidance and sample counts; only the
        # image shape must agree.
        return f"{spec.preset}|{spec.width}x{spec.height}"

    def total_steps(self, spec) -> int:
        # PLMS's first step is two model calls at the first timestep (pipeline.make_scheduler).
        return (self.steps + 1 if self.sampler == "plms" else self.steps) + self.upsample_steps

    def describe(self, spec, width: int, height: int) -> str:
        guidance = f", CFG {self.guidance:g}" if self.guidance != 1 else ""
        samples = f", {self.num_samples} samples" if self.num_samples > 1 else ""
        upsampler = f", then {self.upsample_steps} upsampler steps" if self.upsample_steps else ""
        cache = f", cache {self.cache}" if self.cache > 1 else ""
        return f"{width}x{height}, {self.steps} {self.sampler.upper()} steps{guidance}{samples}{cache}{upsampler}"

    def used_size(self, spec, preset) -> tuple[int, int]:
        unet, codec = _unet_config(preset), _codec(preset)
        cell = codec.factor if codec else 1
        if preset.fixed_size:
            side = int(unet["sample_size"]) * cell
            return side, side
        factor = cell * 2 ** (len(unet["block_out_channels"]) - 1)
        return max(factor, spec.width // factor * factor), max(factor, spec.height // factor * factor)

    def rows(self, spec) -> int:
        """UNet rows per step: each sample once with the prompt and once without (guidance), as the
        pipeline's start() decides."""
        positive = any(p.weight > 0 for p in spec.parts)
        cond = positive and self.guidance > 0
        uncond = self.guidance != 1 or not positive
        return self.num_samples * (int(cond) + int(uncond))

    def job_bytes(self, spec, preset) -> int:
        width, height = self.used_size(spec, preset)
        unet, codec = _unet_config(preset), _codec(preset)
        cell = codec.factor if codec else 1
        cells = width * height / cell ** 2
        blocks = int(unet.get("layers_per_block", 2)) + 1
        skips = sum(c * blocks * cells / 4 ** i for i, c in enumerate(unet["block_out_channels"]))
        total = JOB_FLOOR + PER_SKIP * self.rows(spec) * skips
        if codec is not None:
            total += self.num_samples * (PER_DECODE * codec.activations(width, height)
                                         + PER_DECODE_ATTENTION * codec.attention(width, height))
        return int(total)


def _sampler(value, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text in SIGMA_SAMPLERS:
        raise SpecError("sampler", f"must be one of {', '.join(allowed)}, got {shown(value)} (a sigma-space "
                                   "sampler: not supported, as our loop steps and previews in alpha space)")
    sampler = choice("sampler", value, SAMPLERS)
    if sampler not in allowed:
        raise SpecError("sampler", f"must be one of {', '.join(allowed)} for this preset's model, got {shown(value)}")
    return sampler


def _unet_config(preset) -> dict:
    """The UNet's architecture (torch-free, weights need not be present): the committed `params.config`,
    else the config.json saved beside the weights (the built-in models)."""
    unet = preset.components["unet"]
    if "config" in unet.params:
        return read_config(unet.params["config"])
    return read_config(str(component_weights(unet.weights) / "config.json"))


def _codec(preset) -> TamingDecoder | None:
    """The latent codec's decoder shape (None for pixel space). A diffusers AutoencoderKL's decoder is
    the LDM autoencoder's: ch = the first of block_out_channels, ch_mult the rest over it, attention in
    the mid block only."""
    codec = preset.components["codec"]
    if codec.target == "taming-latents":
        return TamingDecoder.of(codec.params["config"])
    if codec.target == "diffusers-vae":
        vae = read_config(codec.params["config"])
        channels = [int(c) for c in vae["block_out_channels"]]
        return TamingDecoder(channels[0], tuple(c // channels[0] for c in channels), int(vae.get("layers_per_block", 1)),
                             (), int(vae.get("sample_size", 32)))
    return None
