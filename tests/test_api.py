"""The HTTP API (t2i/api/) on a real server (`streamlit run webapp.py`, the API on the same port) with a
real executor: submit over HTTP, follow the server-sent events to the end, fetch the PNG and read its
parameters; cancel mid-run; keys (missing, wrong, revoked, Basic, another key's job); limits answering
429; bad bodies that leave nothing written; `python -m t2i ... --api`."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from apiserver import OPERATOR, service
from t2i.api.app import MAX_BODY
from t2i.output.render import read_parameters
from t2i.paths import ROOT

pytestmark = pytest.mark.subprocess
FAST = {"prompt": "a red circle", "preset": "tiny-vqgan-untrained", "width": 64, "height": 64,
        "save_every": 1, "options": {"iterations": 3}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with service(tmp_path_factory.mktemp("api"), executor=True) as s:
        yield s


def one_line_error(data: bytes, status: int) -> str:
    """The body of every refusal: one JSON line with the error and the status."""
    text = data.decode()
    body = json.loads(text)
    assert "\n" not in text and set(body) == {"error", "status"} and body["status"] == status
    assert body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def written(svc) -> tuple:
    """What a refused request must not have changed: jobs, uploads."""
    return (sum(svc.store.counts().values()), svc.store._one("SELECT COUNT(*) FROM uploads")[0])


def test_submit_follow_events_fetch_png_with_its_parameters(svc):
    status, placed = svc.json("POST", "/api/v1/jobs", {**FAST, "seed": 1234}, key=svc.key("alice"))
    assert status == 201 and placed["position"] >= 1 and placed["links"]["events"].endswith("/events")
    status, events = svc.events(placed["id"])
    assert status == 200
    names = [name for _, name, _ in events]
    assert names[-1] == "done" and names.count("done") == 1
    assert "progress" in names and set(names) <= {"queued", "position", "progress", "preview", "done"}
    steps = [data["step"] for _, name, data in events if name == "progress"]
    assert steps == sorted(steps) and steps[-1] <= 3
    last_id, _, final = events[-1]
    assert last_id == "end" and final["status"] == "done" and final["step"] == final["total"] == 3
    assert final["mine"] is False   # the stream was read without a key
    # The PNG carries its parameters (the infotext of AUTOMATIC1111-style readers too).
    status, headers, png = svc.request("GET", f"/api/v1/jobs/{placed['id']}/png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    params = read_parameters(png)
    assert params["prompt"] == "a red circle" and params["seed"] == 1234 and params["preset"] == "tiny-vqgan-untrained"
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    status, headers, gif = svc.request("GET", f"/api/v1/jobs/{placed['id']}/gif")
    assert status == 200 and gif.startswith(b"GIF8")
    # A reconnect after the end is told to stop (204); one from a step on gets only the end.
    assert svc.events(placed["id"], last_event_id="end")[0] == 204
    assert [n for _, n, _ in svc.events(placed["id"], last_event_id="r1.2")[1]] == ["done"]
    # The owner sees it as theirs; a frame of a finished job is gone (409, one line).
    assert svc.json("GET", f"/api/v1/jobs/{placed['id']}", key=svc.key("alice"))[1]["mine"] is True
    status, _, data = svc.request("GET", f"/api/v1/jobs/{placed['id']}/frame")
    assert status == 409 and "has no frame (done)" in one_line_error(data, 409)


def test_cancel_mid_run_only_by_the_owner(svc):
    alice, bob = svc.key("alice"), svc.key("bob")
    job = {**FAST, "prompt": "a long blue square", "options": {"iterations": 400}}
    status, placed = svc.json("POST", "/api/v1/jobs", job, key=alice, address="192.0.2.20")
    assert status == 201
    status, seen = svc.events(placed["id"], until=lambda e: e[1] == "preview")
    assert seen[-1][1] == "preview" and seen[-1][0] == f"p1.{seen[-1][2]['step']}"
    assert any(name == "progress" for _, name, _ in seen)
    status, headers, frame = svc.request("GET", seen[-1][2]["url"])
    assert status == 200 and frame.startswith(b"\x89PNG") and int(headers["X-Step"]) >= seen[-1][2]["step"]
    status, _, data = svc.request("POST", f"/api/v1/jobs/{placed['id']}/cancel", key=bob)
    assert status == 403 and "not yours" in one_line_error(data, 403)
    status, _, data = svc.request("POST", f"/api/v1/jobs/{placed['id']}/cancel")
    assert status == 401 and "API key" in one_line_error(data, 401)
    status, body = svc.json("POST", f"/api/v1/jobs/{placed['id']}/cancel", key=alice)
    assert status == 200 and body["outcome"] == "cancel_requested"
    # The stream resumed from the last step seen ends with the cancellation, well before step 400.
    status, rest = svc.events(placed["id"], last_event_id=seen[-1][0])
    assert rest[-1][1] == "cancelled" and rest[-1][2]["step"] < 400
    assert all(name != "queued" for _, name, _ in rest)   # the client had seen it queued
    # Retried by its owner only; the retry is a new job, cancelled here while it waits or runs.
    assert svc.request("POST", f"/api/v1/jobs/{placed['id']}/retry", key=bob)[0] == 403
    status, again = svc.json("POST", f"/api/v1/jobs/{placed['id']}/retry", key=alice, address="192.0.2.20")
    assert status == 201 and svc.store.get(again["id"]).retry_of == placed["id"]
    assert svc.json("POST", f"/api/v1/jobs/{again['id']}/cancel", key=alice)[0] == 200


def test_keys_missing_wrong_revoked_basic_and_operator(svc):
    status, headers, data = svc.request("POST", "/api/v1/jobs", FAST)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"] and "API key" in one_line_error(data, 401)
    status, _, data = svc.request("POST", "/api/v1/jobs", FAST, key="t2i_" + "x" * 43)
    assert status == 401 and one_line_error(data, 401) == "unknown or revoked API key"
    # A wrong key is refused even for reads that need none: it is a mistake worth saying.
    assert svc.request("GET", "/api/v1/queue", key="t2i_wrong")[0] == 401
    carol = svc.key("carol")
    basic = "Basic " + base64.b64encode(f"anyone:{carol}".encode()).decode()
    status, body = svc.json("GET", "/api/v1/jobs?mine=true", headers={"Authorization": basic})
    assert status == 200 and body["jobs"] == []
    assert svc.store.revoke_key("carol")
    status, _, data = svc.request("GET", "/api/v1/jobs?mine=true", headers={"Authorization": basic})
    assert status == 401 and one_line_error(data, 401) == "unknown or revoked API key"
    # Executors' hosts are the operator's to see.
    svc.wait_until(lambda: svc.store.workers(seen_within=60), "the executor to be seen")
    anonymous = svc.json("GET", "/api/v1/queue")[1]
    operator = svc.json("GET", "/api/v1/queue", key=OPERATOR)[1]
    assert all("host" not in w for w in anonymous["executors"])
    assert operator["executors"] and all("host" in w for w in operator["executors"])


def test_limits_answer_429_and_write_nothing(svc):
    dave, address = svc.key("dave"), "198.51.100.7"
    job = {**FAST, "prompt": "a green triangle"}
    ids = []
    for _ in range(4):   # SubmitPolicy's max_active_per_address
        status, placed = svc.json("POST", "/api/v1/jobs", job, key=dave, address=address)
        assert status == 201
        ids.append(placed["id"])
    before = written(svc)
    status, _, data = svc.request("POST", "/api/v1/jobs", job, key=dave, address=address)
    assert status == 429 and "already has 4 jobs queued or running" in one_line_error(data, 429)
    assert written(svc) == before
    # Another address (another client) is not held by it.
    status, other = svc.json("POST", "/api/v1/jobs", job, key=dave, address="198.51.100.8")
    assert status == 201
    for job_id in ids + [other["id"]]:
        assert svc.json("POST", f"/api/v1/jobs/{job_id}/cancel", key=dave)[0] == 200


@pytest.mark.parametrize("case, status, line", [
    ("wrong type", 422, "width: Input should be a valid integer"),
    ("unknown field", 422, "colour: Extra inputs are not permitted"),
    ("bad field", 422, "width"),
    ("bad base64", 422, "init_image: is not base64"),
    ("wrong content type", 415, "Content-Type: application/json"),
    ("not JSON", 422, "JSON"),
    ("non-UTF-8", 400, ""),
    ("declared too large", 413, "at most"),
])
def test_bad_bodies_leave_nothing_written(svc, case, status, line):
    key = svc.key("erin")
    image = base64.b64encode(b"\x89PNG not really").decode()
    bodies = {"wrong type": {**FAST, "width": "wide"}, "unknown field": {**FAST, "colour": "red"},
              "bad field": {**FAST, "width": 10**6, "init_image": image}, "bad base64": {**FAST, "init_image": "%%%"}}
    before = written(svc)
    if case in bodies:
        got, _, data = svc.request("POST", "/api/v1/jobs", bodies[case], key=key)
    else:
        raw, headers = {"wrong content type": (b"prompt=a+cat", {"Content-Type": "application/x-www-form-urlencoded"}),
                        "not JSON": (b'{"prompt": ', {"Content-Type": "application/json"}),
                        "non-UTF-8": (b'{"prompt": "\xff\xfe caf\xe9"}', {"Content-Type": "application/json"}),
                        "declared too large": (b"{}", {"Content-Type": "application/json",
                                                        "Content-Length": str(MAX_BODY + 1)})}[case]
        if case == "declared too large":   # urllib would send the real length: speak HTTP directly
            got, data = _declared(svc, headers, key)
        else:
            got, _, data = svc.request("POST", "/api/v1/jobs", raw=raw, key=key, headers=headers)
    assert got == status and line in one_line_error(data, status)
    assert written(svc) == before


def _declared(svc, headers, key):
    host, port = svc.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/v1/jobs")
    for name, value in {**headers, "Authorization": f"Bearer {key}"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    answer = conn.getresponse()
    try:
        return answer.status, answer.read()
    finally:
        conn.close()


def test_a_chunked_body_past_the_bound_is_cut_off(svc):
    """No Content-Length: the bound is counted as the body arrives (413), and nothing is written."""
    before = written(svc)
    host, port = svc.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunk = b"x" * 2**20
    body = iter([b'{"prompt": "'] + [chunk] * (MAX_BODY // len(chunk) + 2) + [b'"}'])
    conn.request("POST", "/api/v1/jobs", body=body, encode_chunked=True,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {svc.key('erin')}"})
    answer = conn.getresponse()
    assert answer.status == 413 and "most taken" in one_line_error(answer.read(), 413)
    conn.close()
    assert written(svc) == before


def test_reads_and_the_schema(svc):
    status, presets = svc.json("GET", "/api/v1/presets")
    assert status == 200 and any(p["name"] == "tiny-vqgan-untrained" and p["ready"] for p in presets["presets"])
    status, one = svc.json("GET", "/api/v1/presets/shapes")   # a world trained here: words and examples
    assert status == 200 and len(one["examples"]) == 3 and one["vocabulary"]
    assert {o["name"] for o in one["options"]} >= {"iterations", "cutn"}
    assert one["options_schema"]["properties"]["iterations"]["type"] == "integer"
    status, diffusion = svc.json("GET", "/api/v1/presets/tiny-diffusion-untrained")
    assert "ddim" in diffusion["options_schema"]["properties"]["sampler"]["enum"]
    status, _, data = svc.request("GET", "/api/v1/presets/nope")
    assert status == 404 and "nope" in one_line_error(data, 404)
    status, gallery = svc.json("GET", "/api/v1/gallery?status=all&search=circle")
    assert status == 200 and all("circle" in item["prompt"] for item in gallery["items"])
    status, mine = svc.json("POST", "/api/v1/jobs", {**FAST, "prompt": "a listed circle"}, key=svc.key("hal"),
                            address="192.0.2.50")
    assert status == 201 and svc.json("POST", f"/api/v1/jobs/{mine['id']}/cancel", key=svc.key("hal"))[0] == 200
    status, gans = svc.json("GET", "/api/v1/gallery?status=all&family=gan")
    status2, guided = svc.json("GET", "/api/v1/gallery?status=all&family=guided")
    assert status == status2 == 200 and guided["total"] >= 1
    assert all(item["preset"] in ("tiny-gan-untrained", "hidden until you vote") for item in gans["items"])
    assert all(item["preset"] != "tiny-gan-untrained" for item in guided["items"])
    assert svc.json("GET", "/api/v1/leaderboard")[0] == 200
    status, schema = svc.json("GET", "/api/openapi.json")
    assert status == 200 and "/api/v1/jobs/{job_id}/events" in schema["paths"]
    assert schema["components"]["securitySchemes"]["key"]["scheme"] == "bearer"   # the docs page's Authorize
    status, _, data = svc.request("GET", "/api/v1/jobs/99999999999999999999")
    assert status in (404, 422) and one_line_error(data, status)
    # A path Streamlit's own check refuses is refused in the API's form.
    status, _, data = svc.request("GET", "/api/v1/presets/..%2F..%2Fetc%2Fpasswd")
    assert status == 400 and "path pattern" in one_line_error(data, 400)
    # The pages still answer beside the API.
    assert svc.request("GET", "/_stcore/health")[0] == 200


def test_the_cli_talks_to_a_remote_service(svc, tmp_path):
    env = {**svc.env, "T2I_API_KEY": svc.key("frank"), "T2I_DB": "sqlite:////nonexistent/t2i.db"}
    base = svc.base

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "t2i", *args, "--api", base], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    made = cli("submit", "a yellow circle", "--preset", "tiny-vqgan-untrained", "--iterations", "2", "--seed", "77")
    assert made.returncode == 0, made.stderr
    job_id = int(made.stdout.split()[1])
    svc.events(job_id)   # to the end
    listed = cli("jobs", "--limit", "5")
    assert listed.returncode == 0 and re.search(rf"^ *{job_id} +done +tiny-vqgan-untrained", listed.stdout, re.M)
    exported = cli("export", str(job_id), "--out", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert read_parameters((tmp_path / "out" / "a-yellow-circle-77.png").read_bytes())["seed"] == 77
    refused = cli("submit", "x", "--preset", "nope")
    assert refused.returncode == 2 and "unknown preset 'nope'" in refused.stderr
    env["T2I_API_KEY"] = "t2i_wrong"
    denied = cli("cancel", str(job_id))
    assert denied.returncode == 1 and "unknown or revoked API key (401)" in denied.stderr


def test_a_compare_group_stays_blind_over_the_api(svc):
    gina = svc.key("gina")
    body = {"prompt": "a blue circle", "presets": ["tiny-vqgan-untrained", "tiny-gan-untrained"], "width": 64,
            "height": 64}
    status, group = svc.json("POST", "/api/v1/groups", body, key=gina, address="192.0.2.40")
    assert status == 201 and len(group["jobs"]) == 2 and group["group_id"] == min(j["id"] for j in group["jobs"])
    for placed in group["jobs"]:
        status, job = svc.json("GET", f"/api/v1/jobs/{placed['id']}", key=gina)
        # As on the pages: the presets are hidden until the caller votes on the group, even from its submitter.
        assert status == 200 and job["preset"] == "hidden until you vote" and job["parameters"] is None
        assert job["mine"] is True
        assert svc.json("POST", f"/api/v1/jobs/{placed['id']}/cancel", key=gina)[0] == 200
    status, _, data = svc.request("POST", "/api/v1/groups", {**body, "presets": ["tiny-vqgan-untrained"]}, key=gina)
    assert status == 422 and "compare 2 to 4 presets, got 1" in one_line_error(data, 422)
