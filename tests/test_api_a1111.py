"""AUTOMATIC1111's /sdapi/v1 (t2i/api/a1111.py) on a real server (`streamlit run webapp.py`) with a real
executor, driven by webuiapi (the client library from the package index, unchanged) with its --api-auth
Basic credentials: txt2img through the queue, the current preset per key, progress with its preview,
interrupt of the caller's own jobs only; a wrong key is 401, a bad value one JSON line 422."""

from __future__ import annotations

import base64
import io
import json
import threading

import pytest
import requests
import webuiapi
from PIL import Image

from apiserver import service
from t2i.api.auth import hash_key

pytestmark = pytest.mark.subprocess
DIFFUSION, GUIDED = "tiny-diffusion-untrained", "tiny-vqgan-untrained"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with service(tmp_path_factory.mktemp("a1111"), executor=True) as s:
        yield s


def client(svc, key: str | None, address: str) -> webuiapi.WebUIApi:
    """webuiapi as its users make it; the session's header only tells the server (which trusts it in
    these tests) which client address to count the limits on."""
    api = webuiapi.WebUIApi(baseurl=f"{svc.base}/sdapi/v1")
    api.session.headers["X-Forwarded-For"] = address
    if key is not None:
        api.set_auth("anyone", key)
    return api


def one_line_error(response, status: int) -> str:
    text = response.text
    body = json.loads(text)
    assert response.status_code == status and "\n" not in text and body["status"] == status, text
    return body["error"]


def written(svc) -> int:
    return sum(svc.store.counts().values())


def test_txt2img_through_the_queue_with_the_current_preset_of_the_key(svc):
    alice = client(svc, svc.key("alice"), "192.0.2.31")
    assert DIFFUSION in alice.util_get_model_names() and GUIDED in alice.util_get_model_names()
    assert "DDIM" in alice.util_get_sampler_names()
    alice.util_set_model(DIFFUSION, find_closest=False)
    assert alice.util_get_current_model() == DIFFUSION
    # The current preset is the key's: another key still has the service's default.
    bob = client(svc, svc.key("bob"), "192.0.2.32")
    assert bob.util_get_current_model() != DIFFUSION
    result = alice.txt2img(prompt="a red circle", negative_prompt="blue", steps=3, cfg_scale=2.5,
                           sampler_name="DDIM", width=32, height=32, seed=77, batch_size=2)
    assert len(result.images) == 2 and all(im.size == (32, 32) for im in result.images)
    info = result.info
    assert info["all_seeds"] == [77, 78] and info["sd_model_name"] == DIFFUSION
    assert (info["sampler_name"], info["cfg_scale"], info["steps"]) == ("DDIM", 2.5, 3)
    # Each PNG carries its infotext; the answer says what was not used (webuiapi sends eta=1.0).
    assert "Seed: 78" in result.images[1].info["parameters"] and info["infotexts"][0].startswith("a red circle")
    assert "eta" in info["t2i"]["ignored"] and info["t2i"]["mapped"]["cfg_scale"] == "guidance"
    assert result.parameters["prompt"] == "a red circle" and result.parameters["seed"] == 77
    # Two jobs of their own (no compare group), the key's, with the mapped options.
    jobs = [svc.store.get(i) for i in info["t2i"]["jobs"]]
    assert [j.spec["seed"] for j in jobs] == [77, 78] and {j.group_id for j in jobs} == {None}
    assert {j.submitter for j in jobs} == {svc.store.key_by_hash(hash_key(svc.key("alice"))).submitter}
    assert jobs[0].spec["prompt"] == "a red circle|blue:-1"
    assert (jobs[0].spec["sampler"], jobs[0].spec["guidance"], jobs[0].spec["steps"]) == ("ddim", 2.5, 3)


def test_progress_with_a_preview_and_interrupt_of_the_callers_own_job(svc):
    carol = client(svc, svc.key("carol"), "192.0.2.33")
    dave = client(svc, svc.key("dave"), "192.0.2.34")
    assert carol.get_progress()["state"]["job_count"] == 0
    answer = {}
    # steps are a guided preset's iterations: enough that the job is still running when interrupted.
    run = threading.Thread(target=lambda: answer.update(result=carol.txt2img(
        prompt="a green square", steps=400, width=64, height=64, seed=5,
        override_settings={"sd_model_checkpoint": GUIDED})))
    run.start()
    seen = svc.wait_until(lambda: (lambda p: p if p["state"]["sampling_step"] >= 1 and p["current_image"] else None)(
        carol.get_progress()), "a running job with a preview in carol's progress")
    assert seen["state"]["job_count"] == 1 and seen["state"]["sampling_steps"] == 400
    assert 0 < seen["progress"] < 1 and seen["textinfo"].startswith("job ")
    assert Image.open(io.BytesIO(base64.b64decode(seen["current_image"]))).size == (64, 64)
    job_id = int(seen["state"]["job"].split()[-1])
    # Another key's interrupt leaves carol's job running; nor does that key see it in its progress.
    assert dave.interrupt() == {} and dave.get_progress()["state"]["job_count"] == 0
    assert svc.store.get(job_id).status == "running" and not svc.store.get(job_id).cancel_requested
    assert carol.interrupt() == {}
    run.join(timeout=120)
    assert not run.is_alive()
    result = answer["result"]
    # As AUTOMATIC1111 answers an interrupt: the image so far (the last frame), marked interrupted.
    assert result.info["t2i"]["interrupted"] == [job_id] and len(result.images) == 1
    assert svc.store.get(job_id).status == "cancelled" and svc.store.get(job_id).total == 400
    assert result.info["t2i"]["mapped"]["steps"] == "iterations" and "cfg_scale" in result.info["t2i"]["ignored"]


def test_wrong_key_401_bad_values_422_unknown_fields_kept_limits_429(svc):
    wrong = client(svc, "t2i_" + "x" * 43, "192.0.2.35")
    refused = wrong.session.post(f"{wrong.baseurl}/txt2img", json={"prompt": "x"})
    assert one_line_error(refused, 401) == "unknown or revoked API key"
    assert "Basic" in refused.headers["WWW-Authenticate"]
    url = f"{svc.base}/sdapi/v1/txt2img"
    anonymous = requests.post(url, json={"prompt": "x"}, headers={"X-Forwarded-For": "192.0.2.36"}, timeout=60)
    assert "API key" in one_line_error(anonymous, 401)
    erin = requests.Session()
    erin.auth = ("anyone", svc.key("erin"))
    erin.headers["X-Forwarded-For"] = "192.0.2.37"
    before = written(svc)
    base = {"prompt": "a circle", "width": 64, "height": 64, "steps": 2,
            "override_settings": {"sd_model_checkpoint": GUIDED}, "some_extension_field": {"args": [1, 2]}}
    for change, words in (({"width": "wide"}, "width"), ({"steps": 0}, "steps (this preset's iterations): must be"),
                          ({"batch_size": 0}, "batch_size"), ({"seed": -5}, "seed"),
                          ({"override_settings": {"sd_model_checkpoint": "nope"}}, "no preset named 'nope'")):
        assert words in one_line_error(erin.post(url, json={**base, **change}, timeout=60), 422)
    assert "no preset named" in one_line_error(
        erin.post(f"{svc.base}/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}, timeout=60), 422)
    # Unknown fields pass; the batch is jobs, and five are over the address's four: nothing queued.
    too_many = erin.post(url, json={**base, "batch_size": 5}, timeout=60)
    assert "at most 4 images" in one_line_error(too_many, 429)
    assert written(svc) == before


def test_a_batch_is_queued_all_or_none_as_separate_jobs(store_url):
    """service.queue.submit_batch on both backends: a job per seed, no compare group, and a batch
    that does not fit the address's limits leaves nothing behind."""
    from t2i.service.queue import QueueLimit, SubmitPolicy, submit_batch
    from t2i.store import open_store

    store, policy = open_store(store_url), SubmitPolicy()
    try:
        ids = submit_batch(store, "a cat", GUIDED, [7, 8, 9], address="198.51.100.7", policy=policy, iterations=2)
        jobs = [store.get(i) for i in ids]
        assert [j.spec["seed"] for j in jobs] == [7, 8, 9] and {j.group_id for j in jobs} == {None}
        with pytest.raises(QueueLimit, match="^your address may have 4 jobs queued or running and this request "
                                             "adds 2 \\(a job per image\\)"):
            submit_batch(store, "a cat", GUIDED, [10, 11], address="198.51.100.7", policy=policy, iterations=2)
        assert sum(store.counts().values()) == 3
        with pytest.raises(QueueLimit, match="ask for at most 4 images at once$"):
            submit_batch(store, "a cat", GUIDED, list(range(5)), address="198.51.100.8", policy=policy)
        assert len(submit_batch(store, "a cat", GUIDED, [12], address="198.51.100.7", policy=policy,
                                iterations=2)) == 1
    finally:
        store.close()


def test_the_mapping_per_family_says_what_each_field_became():
    """a1111_map.plan, without a server: the family's steps field, guidance and sampler only where the
    family has them, sampler names with a schedule, and only the fields that would change an image
    reported as ignored (the hires fix's settings only with enable_hr)."""
    import random

    from t2i.api.a1111_map import Txt2ImgBody, plan
    from t2i.presets import get_preset

    body = Txt2ImgBody(prompt="a cat", negative_prompt="a dog", steps=7, cfg_scale=5, sampler_name="DPM++ 2M Karras",
                       batch_size=2, n_iter=2, restore_faces=True, hr_scale=2, denoising_strength=0.7,
                       s_noise=1.0, subseed=-1, save_images=True, some_extension={"x": 1})
    diffusion = plan(body, get_preset(DIFFUSION), random.Random(1))
    assert diffusion.prompt == "a cat | a dog:-1" and len(set(diffusion.seeds)) == 4
    assert diffusion.seeds == list(range(diffusion.seeds[0], diffusion.seeds[0] + 4))
    assert {k: diffusion.fields[k] for k in ("steps", "guidance", "sampler", "num_samples")} == {
        "steps": 7, "guidance": 5, "sampler": "dpm++", "num_samples": 1}
    assert set(diffusion.ignored) == {"scheduler", "restore_faces", "some_extension"}
    guided = plan(body, get_preset(GUIDED))
    assert guided.fields["iterations"] == 7 and "steps" not in guided.fields and "guidance" not in guided.fields
    assert {"cfg_scale", "sampler_name", "restore_faces"} <= set(guided.ignored)
    gan = plan(Txt2ImgBody(prompt="a cat", steps=3, sampler_name="Euler a", seed=9), get_preset("tiny-gan-untrained"))
    assert gan.mapped["steps"] == "steps (frames)" and gan.seeds == [9] and "sampler_name" in gan.ignored
    unknown = plan(Txt2ImgBody(prompt="a cat", sampler_name="Euler a", enable_hr=True, hr_scale=2), get_preset(DIFFUSION))
    assert "sampler" not in unknown.fields and "not one of ours" in unknown.ignored["sampler_name"]
    assert {"enable_hr", "hr_scale"} <= set(unknown.ignored)


def test_a_client_that_hangs_up_leaves_its_job_to_finish(svc):
    import socket

    key = svc.key("frank")
    payload = json.dumps({"prompt": "a small circle", "steps": 2, "width": 64, "height": 64, "seed": 3,
                          "override_settings": {"sd_model_checkpoint": GUIDED}}).encode()
    auth = base64.b64encode(f"anyone:{key}".encode()).decode()
    host, port = svc.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-Forwarded-For: 192.0.2.38\r\nAuthorization: Basic " + auth.encode() +
                     b"\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        submitter = svc.store.key_by_hash(hash_key(key)).submitter
        job = svc.wait_until(lambda: next(iter(svc.store.jobs(submitter=submitter)), None), "frank's job")
    # Hung up (the socket is closed): the job still runs to its end, into the gallery.
    done = svc.wait_until(lambda: svc.store.get(job.id).status in ("done", "failed", "cancelled")
                          and svc.store.get(job.id), "frank's job to end")
    assert done.status == "done" and svc.store.result(job.id).seed == 3
