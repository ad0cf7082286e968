"""The queue's commands against a remote service (`--api URL`): submit, jobs, cancel, export over the
HTTP API (t2i/api/), with the key from $T2I_API_KEY, so a user on another machine needs no database
access. urllib, not httpx: four small JSON requests need nothing beyond the standard library.

The server's refusals are one line each ({"error": ...}); they are printed as the local commands'
errors are, and the exit status is the same (2 for bad input, 1 otherwise)."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import T2IError
from ..spec import SpecError

KEY_ENV = "T2I_API_KEY"
TIMEOUT_S = 60
MAX_LISTED = 200   # the API's page of recent jobs


def add_api_option(parser) -> None:
    parser.add_argument("--api", metavar="URL", help=f"a remote t2i service (http://host:8501) instead of --db; "
                                                     f"the API key from ${KEY_ENV}")


class Remote:
    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SpecError("--api", f"{url!r} is not an http:// or https:// address")
        self.base = url.rstrip("/")
        self.key = os.environ.get(KEY_ENV, "").strip() or None

    def call(self, method: str, path: str, body: dict | None = None) -> bytes:
        headers = {"Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                return answer.read()
        except urllib.error.HTTPError as e:
            raise _refusal(e) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise T2IError(f"--api {self.base}: cannot reach the service ({reason})") from None

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        return json.loads(self.call(method, path, body))


class Refused(SpecError):
    """The service refused the input (422): the exit status of bad input, the server's line as it is."""

    def __init__(self, line: str):
        ValueError.__init__(self, line)
        self.field = "request"

    def __str__(self) -> str:
        return str(self.args[0])


def _refusal(e: urllib.error.HTTPError) -> Exception:
    try:
        line = json.loads(e.read(64 * 1024)).get("error") or e.reason
    except (ValueError, AttributeError, OSError):
        line = e.reason
    if e.code == 401 and not os.environ.get(KEY_ENV):
        line = f"{line} (set ${KEY_ENV})"
    return Refused(line) if e.code == 422 else T2IError(f"the service refused: {line} ({e.code})")


def submit(args, fields: dict) -> int:
    body = {k: fields[k] for k in ("width", "height", "seed", "save_every") if fields.get(k) not in (None, "")}
    if fields.get("upscale") is not None:
        body["upscale"] = [u for u in fields["upscale"].split(",") if u.strip()]
    if fields.get("init_image"):
        body["init_image"] = base64.b64encode(fields["init_image"]).decode()
    if fields.get("image_prompts"):
        body["image_prompts"] = [base64.b64encode(p).decode() for p in fields["image_prompts"]]
    common = {"width", "height", "seed", "save_every", "upscale", "init_image", "image_prompts"}
    options = {k: v for k, v in fields.items() if k not in common and v is not None}
    body.update(prompt=args.prompt, options=options, **({"preset": args.preset} if args.preset else {}))
    placed = Remote(args.api).json("POST", "/api/v1/jobs", body)
    print(f"job {placed['id']} queued at position {placed['position']}")
    return 0


def jobs(args) -> int:
    query = {"limit": min(args.limit, MAX_LISTED), **({"status": args.status} if args.status else {})}
    found = Remote(args.api).json("GET", "/api/v1/jobs?" + urllib.parse.urlencode(query))
    print("  ".join(f"{k} {v}" for k, v in found["counts"].items()))
    for j in found["jobs"]:
        detail = {"running": f"step {j['step']}/{j['total']}", "queued": f"position {j['position']}",
                  "failed": j["error"] or ""}.get(j["status"], "")
        print(f"{j['id']:>6}  {j['status']:<9}  {j['preset']:<24}  {j['prompt'][:50]!r}  {detail}")
    return 0


def cancel(args) -> int:
    outcome = Remote(args.api).json("POST", f"/api/v1/jobs/{args.job}/cancel")
    print(f"job {args.job}: {outcome['outcome']}")
    return 0


def export(args, out: Path, write, slug) -> int:
    from ..output.render import read_parameters

    remote = Remote(args.api)
    png = remote.call("GET", f"/api/v1/jobs/{args.job}/png")
    gif = remote.call("GET", f"/api/v1/jobs/{args.job}/gif")
    params = read_parameters(png) or {}
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(str(params.get('prompt', 'image')))}-{params.get('seed', args.job)}"
    write(out / f"{stem}.png", png)
    write(out / f"{stem}.gif", gif)
    print(f"wrote {out / stem}.png and .gif")
    return 0
