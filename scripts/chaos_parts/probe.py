"""What a hostile visitor brings, in a child process with a time and a memory bound: PNGs read as the
Generate page's "Open a PNG" reads them (render.read_parameters, which parses a foreign `parameters`
text with infotext.parse_infotext), and option values submitted as the page submits them.

Why a child: a regex that backtracks holds the interpreter lock, so in a thread it would stall the
chaos run itself (as it stalls every session of the web server); a child can be killed at the bound.
The child's peak RSS (getrusage) before and after each file gives the memory the file cost.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from dataclasses import dataclass


def _read_png(data: bytes) -> list[str]:
    from hostile import typing_problems  # tests/, on the path the parent set up

    from t2i.errors import T2IError
    from t2i.output.render import read_parameters
    try:
        return typing_problems(read_parameters(data))
    except T2IError as e:  # a refusal the page shows: one line is what it may be
        lines = str(e).splitlines()
        return [] if len(lines) == 1 else [f"refused with {len(lines)} lines: {str(e)[:120]!r}"]
    except BaseException as e:  # noqa: BLE001 - anything else reaches the page's callback
        return [f"read_parameters raised {type(e).__name__}: {str(e)[:120]}"]


def _submit(name: str, fields: dict, url: str, stores: dict) -> list[str]:
    """The options as the Generate page submits them (submit_job with the page's policy): refused
    with one line is what must happen (or, for the corpus's CLEANED cases, accepted with the text
    cleaned); accepted otherwise, or anything else raised, is a problem."""
    from hostile import CLEANED

    from t2i.errors import SpecError, T2IError
    from t2i.service.queue import SubmitPolicy, submit_job
    from t2i.store import StoreError, open_store
    fields = dict(fields)
    prompt, preset = fields.pop("prompt"), fields.pop("preset")
    try:
        store = stores.get(url) or stores.setdefault(url, open_store(url))
        job_id = submit_job(store, prompt, preset, submitter="hostile", address="203.0.113.9",
                            policy=SubmitPolicy(max_active_per_address=1000, max_per_minute=1000), **fields)
    except (T2IError, SpecError, StoreError) as e:
        lines = str(e).splitlines()
        return [] if len(lines) == 1 else [f"refused with {len(lines)} lines: {str(e)[:120]!r}"]
    except BaseException as e:  # noqa: BLE001 - what escapes submit_job reaches the page
        return [f"submit_job raised {type(e).__name__}: {str(e)[:120]}"]
    try:
        stored = store.get(job_id)
        store.cancel(job_id)  # not to be run: a job of the hostile visitor's
    except StoreError:
        return []  # a fault of the run's own; the invariants still see the job
    if name in CLEANED:
        text = f"{stored.prompt}{stored.spec.get('prompt', '')}" if stored else ""
        return [] if text.encode("utf-8", "replace") == text.encode("utf-8", "surrogatepass") else \
            [f"accepted with its text uncleaned (job {job_id}, cancelled)"]
    return [f"accepted (job {job_id}, cancelled)"]


def _child(conn) -> None:
    import warnings

    # Pillow warns on stderr for every image past its pixel limit; the bounds here say what it cost.
    warnings.simplefilter("ignore")
    stores: dict = {}
    _read_png(b"")  # the imports, before the first file is timed
    while True:
        job = conn.recv()
        if job is None:
            return
        kind, name, payload, url = job
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.monotonic()
        problems = _read_png(payload) if kind == "png" else _submit(name, payload, url, stores)
        seconds = time.monotonic() - start
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        conn.send((seconds, grown_mb, problems))


@dataclass
class Outcome:
    name: str
    seconds: float
    grown_mb: float
    problems: list[str]


class Probe:
    """probe(kind, name, payload) -> Outcome; an input over the time bound is reported (the child is
    killed at 1.5 times the bound and a fresh one takes the next input)."""

    def __init__(self, seconds_bound: float, mb_bound: float):
        self.seconds_bound, self.mb_bound = seconds_bound, mb_bound  # spawn passes our sys.path on
        self.proc = self.conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no threads or store connections of ours
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child,), daemon=True, name="chaos-probe")
        self.proc.start()
        self.conn = parent
        self._ask(("png", "warm-up", b"", None), 120)  # its imports: not the first file's time

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(5)
        self.proc = self.conn = None

    def _ask(self, job, timeout: float):
        """The child's answer, or a problem: no answer in time (the child is killed), or it died."""
        self.conn.send(job)
        if not self.conn.poll(timeout):
            self._stop()
            return f"no answer within {timeout:g} s (killed)"
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.exitcode
            self._stop()
            return f"the process died (exit code {code})"

    def probe(self, kind: str, name: str, payload, url: str | None = None) -> Outcome:
        """kind "png": payload the file's bytes; "options": submit_job's fields, on the store at url."""
        if self.proc is None or not self.proc.is_alive():
            self._start()
            if self.proc is None:
                return Outcome(name, float("inf"), 0.0, ["the probe process did not start"])
        answer = self._ask((kind, name, payload, url), self.seconds_bound * 1.5)
        if isinstance(answer, str):
            return Outcome(name, float("inf"), 0.0, [answer])
        seconds, grown_mb, problems = answer
        if seconds > self.seconds_bound:
            problems.append(f"took {seconds:.1f} s (bound {self.seconds_bound:g} s)")
        if grown_mb > self.mb_bound:
            problems.append(f"cost {grown_mb:.0f} MB (bound {self.mb_bound:g} MB)")
            self._stop()  # its peak stays high: a fresh child measures the next file
        return Outcome(name, seconds, grown_mb, problems)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.is_alive() else None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self._stop()
