"""/api/v1/jobs: submit (one job or a compare group), read, live events, the images, cancel, retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from ..store import FINISHED, MAX_ID
from .auth import Caller, caller, writer
from .errors import ApiError
from .events import stream
from .schemas import GroupBody, SubmitBody
from .service import blind, group_for, job_state, retry_for, store, submit_for

router = APIRouter(prefix="/api/v1", tags=["jobs"])
# Job numbers are the store's 64-bit ids: a larger one is refused (422) before it reaches a driver.
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
PNG, GIF = "image/png", "image/gif"
NO_STORE = {"Cache-Control": "no-store"}


def _job(job_id: int):
    job = store().get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id}")
    return job


@router.post("/jobs", status_code=201, summary="Queue a job")
def submit(body: SubmitBody, who: Caller = Depends(writer)) -> dict:
    """One job, validated and limited as the Generate page's: 422 for a field, 429 for a limit, 201
    with the id, the place in the queue and the links."""
    from ..assets.weights import default_preset

    placed = submit_for(who, body.prompt, body.preset or default_preset(), **body.fields())
    return placed.as_json()


@router.post("/groups", status_code=201, summary="Queue a compare group: one prompt and seed, 2 to 4 presets")
def submit_compare(body: GroupBody, who: Caller = Depends(writer)) -> dict:
    placed = group_for(who, body.prompt, body.presets, **body.fields())
    return {"group_id": placed[0].id, "jobs": [p.as_json() for p in placed]}


@router.get("/jobs", summary="Recent jobs, newest first (mine=true: the caller's own)")
def recent(who: Caller = Depends(caller),
           status: str | None = Query(None, pattern="^(queued|running|done|failed|cancelled)$"),
           mine: bool = False, limit: int = Query(20, ge=1, le=200)) -> dict:
    if mine and who.submitter is None:
        raise ApiError(401, "mine=true needs an API key")
    db = store()
    found = db.jobs(status=status, submitter=who.submitter if mine else None, limit=limit)
    return {"counts": db.counts(),
            "jobs": [job_state(j, who, db.queue_position(j.id) if j.status == "queued" else None) for j in found]}


@router.get("/jobs/{job_id}", summary="A job: status, progress, place and estimate, error, parameters")
def read(job_id: JobId, who: Caller = Depends(caller)) -> dict:
    job = _job(job_id)
    return job_state(job, who, store().queue_position(job_id) if job.status == "queued" else None)


@router.get("/jobs/{job_id}/events", summary="Live events (server-sent): queued, position, progress, preview, "
            "then done, failed or cancelled with the job", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(job_id: JobId, request: Request, who: Caller = Depends(caller)):
    import anyio

    from .events import Seen

    job = await anyio.to_thread.run_sync(_job, job_id)
    last = request.headers.get("last-event-id")
    if Seen.ended(last) and job.status in FINISHED:
        return Response(status_code=204)   # the client has the end: an EventSource stops reconnecting
    return StreamingResponse(stream(job_id, last, who), media_type="text/event-stream",
                             headers={**NO_STORE, "X-Accel-Buffering": "no"})


def _result(job_id: int):
    result = store().result(job_id)
    if result is None:
        job = _job(job_id)
        raise ApiError(409, f"job {job_id} has no image yet ({job.status})")
    return result


@router.get("/jobs/{job_id}/png", summary="The final PNG, with its parameters (infotext)",
            response_class=Response, responses={200: {"content": {PNG: {}}}})
def png(job_id: JobId, who: Caller = Depends(caller)):
    from ..service.compare import pixels_only

    data = _result(job_id).png
    # A blind compare group's image carries no parameters text naming its preset (as on the pages).
    return Response(pixels_only(data) if blind(_job(job_id), who) else data, media_type=PNG)


@router.get("/jobs/{job_id}/gif", summary="The GIF of the run", response_class=Response,
            responses={200: {"content": {GIF: {}}}})
def gif(job_id: JobId, who: Caller = Depends(caller)):
    return Response(_result(job_id).gif, media_type=GIF)


@router.get("/jobs/{job_id}/frame", summary="The latest progress frame of a running job", response_class=Response,
            responses={200: {"content": {PNG: {}}}})
def frame(job_id: JobId, who: Caller = Depends(caller)):
    latest = store().latest_frame(job_id)
    if latest is None:
        job = _job(job_id)
        raise ApiError(409, f"job {job_id} has no frame ({job.status})")
    return Response(latest[1], media_type=PNG, headers={**NO_STORE, "X-Step": str(latest[0])})


@router.get("/jobs/{job_id}/samples/{index}", summary="One sample of a several-sample job (0-based)",
            response_class=Response, responses={200: {"content": {PNG: {}}}})
def sample(job_id: JobId, index: Annotated[int, Path(ge=0, le=63)], who: Caller = Depends(caller)):
    import io

    from ..output.render import grid_samples

    result = _result(job_id)
    samples = grid_samples(result.png, result.parameters)
    if not 0 <= index < len(samples):
        raise ApiError(404, f"job {job_id} has {len(samples)} separate samples; index {index} is not one")
    out = io.BytesIO()
    samples[index].save(out, format="PNG")
    return Response(out.getvalue(), media_type=PNG)


@router.post("/jobs/{job_id}/cancel", summary="Cancel your queued or running job")
def cancel(job_id: JobId, who: Caller = Depends(writer)) -> dict:
    job = _job(job_id)
    if not who.owns(job.submitter):
        raise ApiError(403, f"job {job_id} is not yours to cancel")
    outcome = store().cancel(job_id)
    return {"id": job_id, "outcome": outcome}


@router.post("/jobs/{job_id}/retry", status_code=201, summary="Queue your failed or cancelled job again")
def retry(job_id: JobId, who: Caller = Depends(writer)) -> dict:
    job = _job(job_id)
    if not who.owns(job.submitter):
        raise ApiError(403, f"job {job_id} is not yours to retry")
    try:
        return retry_for(who, job_id).as_json()
    except ValueError as e:
        raise ApiError(409, str(e)) from None
