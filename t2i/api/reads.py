"""/api/v1: what the pages show, read-only (the gallery, the leaderboard, presets, the queue) and votes."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Query

from ..errors import PresetError
from ..service.compare import HIDDEN, blind_groups
from ..service.ranking import VotePolicy, cast_vote, fit_bradley_terry, fit_families, head_to_head
from ..spec import check_search
from .auth import Caller, caller, writer
from .errors import ApiError
from .schemas import VoteBody
from .service import store, voter_of

router = APIRouter(prefix="/api/v1", tags=["reads"])
PAGE_SIZE = 24
_JSON_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "choice": {}}


@router.get("/presets", summary="The presets: name, family, whether their weights are here, what each is good at")
def presets(who: Caller = Depends(caller)) -> dict:
    from ..assets.weights import is_ready
    from ..presets import all_presets
    from ..service.guide import good_at

    return {"presets": [{"name": p.name, "family": p.family, "ready": is_ready(p), "good_at": good_at(p)}
                        for p in all_presets().values()]}


@router.get("/presets/{name}", summary="One preset: its family's options as a schema, its words and examples")
def preset(name: str, who: Caller = Depends(caller)) -> dict:
    from ..assets.weights import is_ready
    from ..families import family
    from ..presets import get_preset
    from ..service.guide import guide

    try:
        p = get_preset(name)
    except PresetError as e:
        raise ApiError(404, str(e)) from None
    g = guide(p)
    form = family(p.family).options.FORM
    options = [{"name": f.name, "label": f.label, "kind": f.kind, "choices": list(f.choices), "help": f.help,
                "default": p.defaults.get(f.name)} for f in form]
    # The same fields as a JSON Schema of the submit body's `options` (types and choices; the bounds
    # are the family's parse, which names the field and its range when a value is outside it).
    schema = {"type": "object", "additionalProperties": False,
              "properties": {f.name: {**_JSON_TYPES.get(f.kind, {}), **({"enum": list(f.choices)} if f.choices else {}),
                                      "description": f.help or f.label} for f in form}}
    return {"name": p.name, "family": p.family, "family_words": g.family, "description": p.description,
            "good_at": g.good_at, "ready": is_ready(p), "fixed_size": p.fixed_size, "post": list(p.post),
            "defaults": p.defaults, "options": options, "options_schema": schema,
            "vocabulary": {k: list(v) for k, v in g.world.vocabulary.items()} if g.world else None,
            "examples": list(g.world.examples) if g.world else []}


@router.get("/queue", summary="Jobs per status, throughput and the executors seen (operator: their hosts)")
def queue(who: Caller = Depends(caller)) -> dict:
    db = store()
    now = time.time()
    workers = []
    for i, w in enumerate(db.workers(seen_within=60), 1):
        row = {"executor": w["id"], "host": w["host"]} if who.operator else {"executor": f"#{i}"}
        workers.append({**row, "device": w["device"], "job": w["job_id"], "seen_s_ago": round(now - w["seen_at"], 1)})
    return {"counts": db.counts(), "finished_last_minute": db.finished_since(60),
            "finished_last_hour": db.finished_since(3600), "executors": workers}


@router.get("/gallery", summary="Finished images (and other jobs) with the gallery page's filters and paging")
def gallery(who: Caller = Depends(caller), search: str = Query("", max_length=2000), preset: str | None = None,
            family: str | None = Query(None, max_length=64, description="the presets of one family (guided, ...)"),
            status: str = Query("done", pattern="^(all|queued|running|done|failed|cancelled)$"),
            since_s: float | None = Query(None, ge=0, le=10 * 365 * 86400, description="made in the last N seconds"),
            sort: str = Query("newest", pattern="^(newest|preferred)$"),
            page: int = Query(1, ge=1, le=100_000)) -> dict:
    from ..service.ranking import family_of

    db = store()
    # A family is the list of its presets among those in use, as on the gallery page.
    presets = [name for name in db.presets_in_use() if family_of(name) == family] if family else None
    items, total = db.gallery(search=check_search(search) or None, preset=preset, presets=presets,
                              status=None if status == "all" else status,
                              since=time.time() - since_s if since_s is not None else None, sort=sort,
                              limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    # Blind compare groups (t2i/service/compare.py), as on the gallery page: presets hidden until the
    # caller votes on the group, and under a preset filter such images are left out.
    hidden = blind_groups(db, voter_of(who), [item["group_id"] for item in items])
    shown = []
    for item in items:
        if item["group_id"] in hidden and (preset or family):
            continue
        row = {k: v for k, v in item.items() if k != "thumbnail"}
        if item["group_id"] in hidden:
            row["preset"] = HIDDEN
        shown.append({**row, "links": {"job": f"/api/v1/jobs/{item['id']}", "png": f"/api/v1/jobs/{item['id']}/png"}})
    return {"total": total, "page": page, "pages": max(1, -(-total // PAGE_SIZE)), "items": shown}


@router.get("/leaderboard", summary="Presets and families ranked by the votes (Bradley-Terry), head to head")
def leaderboard(who: Caller = Depends(caller)) -> dict:
    records = store().vote_records()
    ratings = fit_bradley_terry(records)

    def rows(found):
        return [{"name": r.preset, "score": round(r.score), "low": round(r.low), "high": round(r.high),
                 "votes": r.votes, "wins": r.wins} for r in found]
    return {"votes": len(records), "presets": rows(ratings), "families": rows(fit_families(records)),
            "head_to_head": [{"preset": m.preset, "opponent": m.opponent, "rate": m.rate, "votes": m.votes}
                             for m in head_to_head(records, order=[r.preset for r in ratings])]}


@router.post("/votes", status_code=201, summary="Vote on a pair of finished images (the Vote page's choices)")
def vote(body: VoteBody, who: Caller = Depends(writer)) -> dict:
    try:
        counted = cast_vote(store(), voter_of(who), who.address, body.left, body.right, body.choice,
                            VotePolicy.from_env())
    except ValueError as e:   # the store's line: the same job twice, or not two finished images
        raise ApiError(409, str(e)) from None
    return {"counted": counted}
