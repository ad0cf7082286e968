"""AUTOMATIC1111's API (/sdapi/v1/...) over this service's queue, so that its clients (webuiapi, chat
front ends, editors' plugins) work unchanged.

    POST /txt2img      a batch of jobs through the queue (service.queue.submit_batch: the same limits,
                       memory admission and quotas as any submission), answered when they end, as
                       AUTOMATIC1111 answers: images (base64 PNGs, each with its infotext), parameters
                       (the request), info (a JSON string; its "t2i" key says what each field became
                       and which were ignored, a1111_map.py)
    GET  /sd-models    the ready presets, as checkpoints (title = the preset's name)
    GET  /samplers     our samplers by AUTOMATIC1111's names (only families with a sampler read them)
    GET  /options      the caller's current preset as sd_model_checkpoint, and a few fixed settings
    POST /options      sets the caller's current preset (sd_model_checkpoint); other settings ignored
    GET  /progress     the caller's queued and running jobs: progress, estimate, the latest frame
    POST /interrupt    cancels the caller's queued and running jobs (AUTOMATIC1111 stops the current
                       image and the rest of its batch)
    GET  /scripts      none (webuiapi asks at start and fails later without an answer)

Identity is the project's (auth.py): the key as the Bearer token or as the HTTP Basic password, which is
what AUTOMATIC1111 clients send for its --api-auth. Scope of the current preset: per caller (the key;
an anonymous caller's is per address), held by this server process: a restart forgets it (every answer's
info names the preset used), and several web servers keep one each. Why not the store: a setting a
client sets again at start did not seem worth a schema version while others change the schema too.

txt2img waits without holding a thread (async, the store read on a worker thread every POLL_S, as the
event streams do); a client that hangs up stops the wait, not its jobs, which finish into the gallery.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict

import anyio
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from ..errors import PresetError, SpecError
from ..service.queue import SubmitPolicy, submit_batch
from ..spec import Limits
from ..store import FINISHED
from .a1111_map import SAMPLER_NAMES, Plan, Txt2ImgBody, info, plan
from .auth import Caller, caller, writer
from .errors import ApiError
from .service import store, voter_of

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])
POLL_S = 0.25        # half the executor's progress cadence (0.5 s): 125 ms added on average (BENCHMARKS.md)
MAX_CHOICES = 10_000  # callers whose current preset is remembered (anonymous ones are per address)
_chosen: OrderedDict[str, str] = OrderedDict()
_chosen_lock = threading.Lock()


# --- the caller's current preset --------------------------------------------------------------

def current_preset(who: Caller) -> str:
    from ..cli.common import default_preset

    with _chosen_lock:
        chosen = _chosen.get(voter_of(who))
    return chosen or default_preset()


def _choose(who: Caller, name: str) -> None:
    with _chosen_lock:
        _chosen[voter_of(who)] = name
        _chosen.move_to_end(voter_of(who))
        while len(_chosen) > MAX_CHOICES:
            _chosen.popitem(last=False)


def _preset(name: str):
    """The preset a checkpoint title names: SpecError (422) naming the field when there is none."""
    from ..presets import get_preset

    try:
        return get_preset(name.strip())
    except PresetError:
        raise SpecError("sd_model_checkpoint", f"no preset named {name.strip()[:80]!r}; "
                                               "GET /sdapi/v1/sd-models lists them") from None


# --- txt2img ----------------------------------------------------------------------------------

def _renamed(error: SpecError, made: Plan) -> SpecError:
    """A refusal of one of our fields named by the AUTOMATIC1111 field it came from."""
    theirs = made.renamed.get(error.field)
    if theirs is None or theirs == error.field:
        return error
    renamed = SpecError(f"{theirs} (this preset's {error.field})", str(error)[len(error.field) + 2:])
    renamed.field = theirs
    return renamed


def _submit(body: Txt2ImgBody, who: Caller) -> tuple[Plan, list[int]]:
    made = plan(body, _preset(body.checkpoint or current_preset(who)))
    try:
        ids = submit_batch(store(), made.prompt, made.preset, made.seeds, submitter=who.submitter,
                           address=who.address, limits=Limits.from_env(), policy=SubmitPolicy.from_env(),
                           **made.fields)
    except SpecError as e:
        raise _renamed(e, made) from None
    return made, ids


def _ended(ids: list[int]) -> list | None:
    """The jobs when all have ended, else None."""
    db = store()
    jobs = [db.get(i) for i in ids]
    return jobs if all(j is None or j.status in FINISHED for j in jobs) else None


def _answer(body: Txt2ImgBody, made: Plan, jobs: list) -> dict:
    db = store()
    jobs = [j for j in jobs if j is not None]
    results = {j.id: db.result(j.id) for j in jobs if j.status == "done"}
    results = {k: r for k, r in results.items() if r is not None}
    images, interrupted = [], []
    for job in jobs:
        if job.id in results:
            images.append(results[job.id].png)
        elif job.status == "cancelled":   # as AUTOMATIC1111 answers an interrupt: the image so far
            interrupted.append(job.id)
            frame = db.latest_frame(job.id)
            if frame is not None:
                images.append(frame[1])
    if not images and any(j.status == "failed" for j in jobs):
        failed = next(j for j in jobs if j.status == "failed")
        raise ApiError(500, f"job {failed.id} failed: {failed.error}")
    return {"images": [base64.b64encode(png).decode() for png in images] if body.send_images else [],
            "parameters": body.model_dump(),
            "info": _json(info(made, body, jobs, results, interrupted))}


def _json(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


@router.post("/txt2img", summary="AUTOMATIC1111's txt2img: a job per image through the queue, answered when done")
async def txt2img(request: Request, body: Txt2ImgBody, who: Caller = Depends(writer)):
    made, ids = await anyio.to_thread.run_sync(_submit, body, who)
    while True:
        jobs = await anyio.to_thread.run_sync(_ended, ids)
        if jobs is not None:
            return await anyio.to_thread.run_sync(_answer, body, made, jobs)
        if await request.is_disconnected():
            return Response(status_code=204)   # nobody reads it; the jobs go on into the gallery
        await anyio.sleep(POLL_S)   # the poll's cadence, not a wait standing in for a result


# --- models, samplers, options, scripts -------------------------------------------------------

@router.get("/sd-models", summary="The presets that can run now, as AUTOMATIC1111 checkpoints")
def sd_models(who: Caller = Depends(caller)) -> list[dict]:
    from ..assets.weights import ready_presets

    return [{"title": name, "model_name": name, "hash": None, "sha256": None,
             "filename": f"configs/{name}.yaml", "config": None} for name in ready_presets()]


@router.get("/samplers", summary="Our samplers by AUTOMATIC1111's names (presets without a sampler ignore them)")
def samplers(who: Caller = Depends(caller)) -> list[dict]:
    from ..families import FAMILIES

    ours = dict.fromkeys(c for f in FAMILIES.values() for field in f.options.FORM if field.name == "sampler"
                         for c in field.choices)
    return [{"name": SAMPLER_NAMES.get(s, s), "aliases": [s], "options": {}} for s in ours]


@router.get("/scripts", summary="Scripts: none (AUTOMATIC1111's clients ask at start)")
def scripts(who: Caller = Depends(caller)) -> dict:
    return {"txt2img": [], "img2img": []}


@router.get("/options", summary="The caller's current preset (sd_model_checkpoint) and fixed settings")
def get_options(who: Caller = Depends(caller)) -> dict:
    # return_grid: a batch's answer is its images, never a grid before them.
    return {"sd_model_checkpoint": current_preset(who), "sd_checkpoint_hash": None, "samples_format": "png",
            "return_grid": False, "sd_vae": "None", "CLIP_stop_at_last_layers": 1,
            "t2i_scope": "sd_model_checkpoint is per API key, kept by this server process"}


@router.post("/options", summary="Set the caller's current preset (sd_model_checkpoint); other settings are ignored")
def set_options(settings: dict = Body(..., max_length=256), who: Caller = Depends(writer)) -> dict:
    chosen = settings.get("sd_model_checkpoint")
    if chosen is not None:
        if not isinstance(chosen, str):
            raise SpecError("sd_model_checkpoint", "must be a preset's name")
        _choose(who, _preset(chosen).name)
    return {"sd_model_checkpoint": current_preset(who),
            "ignored": sorted(k for k in settings if k != "sd_model_checkpoint")}


# --- progress and interrupt -------------------------------------------------------------------

def _mine(who: Caller) -> list:
    """The caller's queued and running jobs, oldest first (none for an anonymous caller: its jobs
    carry no submitter to find them by)."""
    if who.submitter is None:
        return []
    db = store()
    found = db.jobs(status="running", submitter=who.submitter, limit=64)
    found += db.jobs(status="queued", submitter=who.submitter, limit=64)
    return sorted(found, key=lambda j: j.id)


def _progress(who: Caller, skip_image: bool) -> dict:
    from ..service.jobview import progress

    jobs = _mine(who)
    state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
             "job_count": len(jobs), "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if not jobs:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None,
                "textinfo": None if who.submitter else "send an API key to see your jobs' progress"}
    current = next((j for j in jobs if j.status == "running"), jobs[0])
    seen = [progress(j) for j in jobs]
    fraction = sum(s.fraction for s in seen) / len(jobs)
    eta = max((s.remaining for s in seen if s.remaining is not None), default=0.0)
    state.update(job=f"job {current.id}", interrupted=bool(current.cancel_requested),
                 job_no=jobs.index(current), sampling_step=current.step, sampling_steps=current.total)
    frame = None
    if current.status == "running" and not skip_image:
        latest = store().latest_frame(current.id)
        frame = base64.b64encode(latest[1]).decode() if latest else None
    text = (f"job {current.id}: step {current.step} of {current.total}" if current.status == "running"
            else f"job {current.id}: queued, place {store().queue_position(current.id)}")
    return {"progress": round(min(1.0, fraction), 4), "eta_relative": round(eta, 1), "state": state,
            "current_image": frame, "textinfo": text}


@router.get("/progress", summary="Your jobs' progress, estimate and latest frame (base64 PNG)")
def get_progress(who: Caller = Depends(caller), skip_current_image: bool = Query(False)) -> dict:
    return _progress(who, skip_current_image)


@router.post("/interrupt", summary="Cancel your queued and running jobs")
def interrupt(who: Caller = Depends(writer)) -> dict:
    db = store()
    for job in _mine(who):
        db.cancel(job.id)
    return {}
