"""The queue's commands: `submit`, `jobs`, `cancel`, `retry`, `export` (all on the store of --db; submit,
jobs, cancel and export also on a remote service with --api URL: t2i/cli/remote.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import T2IError
from ..spec import SpecError
from . import remote
from .common import add_db_options, add_spec_options, default_preset, job_id, open_store, slug, spec_fields, \
    write_atomic


def add_submit(sub) -> None:
    q = sub.add_parser("submit", help="queue a job for the executors")
    add_spec_options(q)
    add_db_options(q)
    q.add_argument("--priority", type=int, default=0, help="higher runs first")
    q.add_argument("--submitter", default=None, help="who submitted it (for per-user views)")
    remote.add_api_option(q)
    q.set_defaults(func=cmd_submit)


def cmd_submit(args) -> int:
    from ..presets import get_preset
    from ..service.caps import asked_size_note
    from ..service.queue import submit_job

    if args.api:
        return remote.submit(args, spec_fields(args))
    store = open_store(args)
    fields, preset = spec_fields(args), args.preset or default_preset()
    new = submit_job(store, args.prompt, preset, priority=args.priority, submitter=args.submitter, **fields)
    print(f"job {new} queued at position {store.queue_position(new)}")
    note = asked_size_note(get_preset(preset), fields["width"], fields["height"])
    if note is not None:
        print(f"note: {note}")
    return 0


def add_jobs(sub) -> None:
    j = sub.add_parser("jobs", help="queue counts and recent jobs")
    add_db_options(j)
    j.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])
    j.add_argument("--limit", type=int, default=20)
    remote.add_api_option(j)
    j.set_defaults(func=cmd_jobs)


def cmd_jobs(args) -> int:
    if not 1 <= args.limit <= 10_000:
        raise SpecError("--limit", f"must be between 1 and 10000, got {args.limit}")
    if args.api:
        return remote.jobs(args)
    store = open_store(args)
    counts = store.counts()
    print("  ".join(f"{k} {v}" for k, v in counts.items()))
    for j in store.jobs(status=args.status, limit=args.limit):
        detail = {"running": f"step {j.step}/{j.total} on {j.worker_id}",
                  "queued": f"position {store.queue_position(j.id)}",
                  "failed": j.error or ""}.get(j.status, "")
        print(f"{j.id:>6}  {j.status:<9}  {j.preset:<24}  {j.prompt[:50]!r}  {detail}")
    return 0


def _add_job_command(sub, name: str, func, text: str):
    c = sub.add_parser(name, help=text)
    c.add_argument("job", type=int)
    add_db_options(c)
    c.set_defaults(func=func)
    return c


def add_cancel(sub) -> None:
    remote.add_api_option(_add_job_command(sub, "cancel", cmd_cancel, "cancel a queued or running job"))


def cmd_cancel(args) -> int:
    if args.api:
        job_id(args)
        return remote.cancel(args)
    outcome = open_store(args).cancel(job_id(args))
    if outcome is None:
        raise T2IError(f"no job {args.job}")
    print(f"job {args.job}: {outcome}")
    return 0


def add_retry(sub) -> None:
    _add_job_command(sub, "retry", cmd_retry, "queue a failed or cancelled job again")


def cmd_retry(args) -> int:
    old = job_id(args)
    try:
        new = open_store(args).retry(old)
    except ValueError as e:
        raise T2IError(str(e)) from None
    print(f"job {args.job} retried as job {new}")
    return 0


def add_export(sub) -> None:
    c = _add_job_command(sub, "export", cmd_export, "write a finished job's PNG and GIF to a directory")
    c.add_argument("--out", default="outputs")
    remote.add_api_option(c)


def cmd_export(args) -> int:
    wanted = job_id(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} exists and is not a directory")
    if args.api:
        return remote.export(args, out, write_atomic, slug)   # wanted: checked above
    store = open_store(args)
    result = store.result(wanted)
    if result is None:
        job = store.get(wanted)
        raise T2IError(f"job {wanted} has no result ({job.status if job else 'no such job'})")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError("--out", f"cannot create {out}: {e.strerror}") from None
    stem = f"{slug(result.parameters['prompt'])}-{result.seed}"
    write_atomic(out / f"{stem}.png", result.png)
    write_atomic(out / f"{stem}.gif", result.gif)
    print(f"wrote {out / stem}.png and .gif")
    return 0
