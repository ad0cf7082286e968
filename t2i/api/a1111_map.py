"""AUTOMATIC1111's txt2img request mapped onto a preset's family, and its answer's `info`.

    Txt2ImgBody                  the request: AUTOMATIC1111's field names and types; unknown fields kept
                                 (clients send many: hires fix, scripts, extensions' settings)
    plan(body, preset) -> Plan   the prompt, the fields of each job, the seeds, and per field what it
                                 became (`mapped`) or why it was not used (`ignored`)
    info(plan, jobs, results)    the answer's `info` object (AUTOMATIC1111's keys, plus our own "t2i")

The mapping asks the family's record and option names, never its name (tests/test_family_registry.py):
`steps` is the family's steps field (a guided preset's iterations, a GAN's frames), `cfg_scale` goes to
a family with a `guidance` option, `sampler_name` to one with a `sampler`. Each image is a job of its own
(service.queue.submit_batch): batch_size x n_iter jobs with seeds seed, seed+1, ... as AUTOMATIC1111
numbers a batch's seeds, so each image is remade alone by its seed. Limits on values are the spec's and
the family's (a bad one is a 422 naming the field); this module bounds only the JSON and the count.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..families import family, option_names
from ..output.infotext import SAMPLER_NAMES, our_prompt, to_infotext
from ..service.queue import GROUP_SEED_RANGE
from .schemas import MAX_TEXT

# Images one request may ask for (batch_size x n_iter): each is a job, and the address's limits
# (T2I_MAX_ACTIVE_PER_ADDRESS, 4 by default) usually bind first; this only bounds the JSON.
MAX_IMAGES = 64
RANDOM_SEED = -1
# Our samplers by their AUTOMATIC1111 names (t2i/output/infotext.py writes them so), and by our own.
SAMPLERS = {**{name.lower(): ours for ours, name in SAMPLER_NAMES.items()}, **{o: o for o in SAMPLER_NAMES}}
# Before A1111 1.9 a sampler's name carried its noise schedule ("DPM++ 2M Karras"); ours is the model's.
SCHEDULES = ("karras", "exponential", "sgm uniform", "polyexponential", "uniform", "simple",
             "normal", "ddim", "beta", "align your steps", "kl optimal")
SAME_SCHEDULE = ("", "automatic")
# Fields read here (by plan) or honoured by the router (send_images).
MAPPED = ("prompt", "negative_prompt", "steps", "cfg_scale", "sampler_name", "sampler_index", "scheduler",
          "width", "height", "seed", "batch_size", "n_iter", "override_settings", "send_images")
# Fields that change no image here or there: where the files go, and options restored afterwards
# (an override here lasts for its request only).
INERT = ("save_images", "do_not_save_samples", "do_not_save_grid", "override_settings_restore_afterwards",
         "force_task_id", "infotext", "comments", "disable_extra_networks")
HIRES = ("enable_hr", "hr_", "firstphase_", "denoising_strength", "refiner_")   # the hires fix's fields
# AUTOMATIC1111's defaults that are not empty (webuiapi sends them on every request).
A1111_DEFAULTS = {"s_noise": 1.0, "subseed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1}
EMPTY = (None, "", [], {}, False, 0, "None")
WHY = {
    "enable_hr": "no hires fix: a preset's post-steps (upscalers) run instead",
    "restore_faces": "no face restoration", "tiling": "no tiling", "styles": "no saved styles",
    "subseed": "no variation seeds", "subseed_strength": "no variation seeds",
    "seed_resize_from_w": "no seed resize", "seed_resize_from_h": "no seed resize",
    "script_name": "no scripts", "script_args": "no scripts", "alwayson_scripts": "no extensions",
    "eta": "the preset's own eta is used", "s_churn": "no sigma-space samplers",
    "s_tmin": "no sigma-space samplers", "s_tmax": "no sigma-space samplers", "s_noise": "no sigma-space samplers",
}


class Txt2ImgBody(BaseModel):
    """AUTOMATIC1111's StableDiffusionTxt2ImgProcessingAPI, the fields mapped here typed as there;
    omitted ones take the preset's defaults (not A1111's 512x512 and 50 steps, which a small preset
    may not make)."""
    model_config = ConfigDict(extra="allow")

    prompt: str = Field("", max_length=MAX_TEXT)
    negative_prompt: str = Field("", max_length=MAX_TEXT)
    steps: int | None = None
    cfg_scale: float | None = None
    sampler_name: str | None = Field(None, max_length=200)
    sampler_index: str | None = Field(None, max_length=200, description="the older name of sampler_name")
    scheduler: str | None = Field(None, max_length=200)
    width: int | None = None
    height: int | None = None
    seed: int = Field(RANDOM_SEED, description="-1: random; a batch's images get seed, seed+1, ...")
    batch_size: int = Field(1, ge=1, le=MAX_IMAGES)
    n_iter: int = Field(1, ge=1, le=MAX_IMAGES)
    override_settings: dict[str, Any] | None = Field(None, max_length=256)
    send_images: bool = True

    @property
    def checkpoint(self) -> str | None:
        chosen = (self.override_settings or {}).get("sd_model_checkpoint")
        return chosen if isinstance(chosen, str) and chosen.strip() else None


@dataclass
class Plan:
    preset: str
    family: str
    prompt: str
    fields: dict
    seeds: list[int]
    mapped: dict = field(default_factory=dict)     # A1111's field -> what it became, in words
    ignored: dict = field(default_factory=dict)    # A1111's field -> why it was not used
    renamed: dict = field(default_factory=dict)    # our field -> A1111's, for refusals' messages


def sampler_of(name: str | None) -> tuple[str | None, str | None]:
    """(our sampler, the schedule its name asked for and that is not used), or (None, None) when the
    name is none of ours."""
    text = " ".join((name or "").lower().split())
    if text in SAMPLERS:
        return SAMPLERS[text], None
    for schedule in SCHEDULES:
        base = text.removesuffix(" " + schedule)
        if base != text and base in SAMPLERS:
            return SAMPLERS[base], schedule
    return None, None


def seeds_of(body: Txt2ImgBody, rng: random.Random | None = None) -> list[int]:
    """AUTOMATIC1111's numbering: the first image's seed, then one more per image; -1 picks the first."""
    first = body.seed if body.seed != RANDOM_SEED else (rng or random.SystemRandom()).randrange(GROUP_SEED_RANGE)
    return [first + i for i in range(body.batch_size * body.n_iter)]


def _sampler(body: Txt2ImgBody, own: tuple, family_name: str, plan: Plan) -> None:
    asked = body.sampler_name if body.sampler_name is not None else body.sampler_index
    if "sampler" not in own:
        if asked:
            plan.ignored["sampler_name"] = f"{family_name} presets have no sampler"
        if (body.scheduler or "").strip().lower() not in SAME_SCHEDULE:
            plan.ignored["scheduler"] = f"{family_name} presets have no sampler"
        return
    ours, schedule = sampler_of(asked)
    if ours is not None:
        plan.fields["sampler"], plan.mapped["sampler_name"] = ours, f"sampler {ours}"
        plan.renamed["sampler"] = "sampler_name"
        if schedule:
            plan.ignored["scheduler"] = f"the {schedule} schedule: the model's own noise schedule is used"
    elif asked:
        names = ", ".join(SAMPLER_NAMES.values())
        plan.ignored["sampler_name"] = f"{asked!r} is not one of ours ({names}): the preset's default was used"
    if (body.scheduler or "").strip().lower() not in SAME_SCHEDULE and not plan.ignored.get("scheduler"):
        plan.ignored["scheduler"] = f"{body.scheduler!r}: the model's own noise schedule is used"


def plan(body: Txt2ImgBody, preset, rng: random.Random | None = None) -> Plan:
    """What the request becomes for `preset` (a Preset). Values are checked later, by make_spec."""
    record, own = family(preset.family), option_names(preset.family)
    out = Plan(preset.name, preset.family, our_prompt(body.prompt, body.negative_prompt),
               {"width": body.width, "height": body.height}, seeds_of(body, rng))
    out.mapped.update(prompt="prompt (as text: A1111's (emphasis:1.2) and [edits] are not read)",
                      negative_prompt="a prompt part of weight -1", width="width", height="height",
                      seed="seed (-1: random; image k of the batch: seed + k)",
                      batch_size="one job per image", n_iter="one job per image")
    if body.steps is not None:
        out.fields[record.steps_field] = body.steps
        label = next((f.label for f in record.options.FORM if f.name == record.steps_field), record.steps_field)
        words = record.steps_field if label.lower() == record.steps_field else f"{record.steps_field} ({label.lower()})"
        out.mapped["steps"], out.renamed[record.steps_field] = words, "steps"
    if "guidance" in own:
        out.fields["guidance"] = body.cfg_scale
        out.mapped["cfg_scale"], out.renamed["guidance"] = "guidance", "cfg_scale"
    elif body.cfg_scale is not None:
        out.ignored["cfg_scale"] = f"{preset.family} presets have no guidance scale"
    if "num_samples" in own:   # an image per job, as A1111's: the batch is jobs, not a grid
        out.fields["num_samples"] = 1
    _sampler(body, own, preset.family, out)
    if body.checkpoint:
        out.mapped["override_settings.sd_model_checkpoint"] = "preset"
    out.ignored.update(_unused(body))
    return out


def _unused(body: Txt2ImgBody) -> dict:
    """The fields sent that would change an AUTOMATIC1111 image and change nothing here, with why."""
    sent = dict(body.model_extra or {})
    hires = bool(sent.get("enable_hr"))
    out = {}
    for name, value in sent.items():
        if name in MAPPED or name in INERT or value in EMPTY or A1111_DEFAULTS.get(name) == value:
            continue
        if name.startswith(HIRES) and not hires and name != "enable_hr":
            continue   # read by A1111 only with enable_hr
        out[name] = WHY.get(name, "t2i has no such setting")
    for name in (body.override_settings or {}):
        if name != "sd_model_checkpoint":
            out[f"override_settings.{name}"] = "only sd_model_checkpoint (the preset) is read"
    return out


def info(plan: Plan, body: Txt2ImgBody, jobs: list, results: dict, interrupted: list[int]) -> dict:
    """AUTOMATIC1111's `info` (Processed.js()) for the images answered: `results` maps a job id to its
    Result; jobs without one (interrupted, failed) keep their seed in all_seeds but have no infotext."""
    params = [results[j.id].parameters for j in jobs if j.id in results]
    first = params[0] if params else {}
    size = first.get("size") or [plan.fields.get("width"), plan.fields.get("height")]
    sampler = first.get("sampler")
    steps_field = family(plan.family).steps_field
    return {
        "prompt": body.prompt, "all_prompts": [body.prompt] * len(plan.seeds),
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [body.negative_prompt] * len(plan.seeds),
        "seed": plan.seeds[0], "all_seeds": plan.seeds, "subseed": -1, "all_subseeds": [-1] * len(plan.seeds),
        "subseed_strength": 0, "width": size[0], "height": size[1],
        "sampler_name": SAMPLER_NAMES.get(sampler, sampler), "cfg_scale": first.get("guidance"),
        "steps": first.get(steps_field), "batch_size": body.batch_size, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": plan.preset, "sd_model_hash": None,
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": None, "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [to_infotext(p) for p in params], "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": f"t2i {__version__}",
        "t2i": {"preset": plan.preset, "family": plan.family, "jobs": [j.id for j in jobs],
                "mapped": plan.mapped, "ignored": plan.ignored, "interrupted": interrupted,
                "failed": {str(j.id): j.error for j in jobs if j.status == "failed"}},
    }
