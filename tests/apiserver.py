"""A real t2i service for the API tests: `streamlit run webapp.py` (as run_webapp.sh starts it, the API on
the same port) and, when asked, a real executor; plus a small HTTP client (urllib and http.client: the
standard library, so nothing between the test and the server is mocked or wrapped)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from t2i.api.auth import hash_key, new_key
from t2i.paths import ROOT
from t2i.store import open_store
from webserver import free_port, stop, wait_healthy

import polling  # tests/polling.py

OPERATOR = "operator-token-for-tests"
PROXY = "X-Forwarded-For"   # the server trusts it, so each test can be its own client address


@dataclass
class Service:
    base: str
    store: object
    url: str
    env: dict
    keys: dict = field(default_factory=dict)   # name -> key
    procs: list = field(default_factory=list)

    def key(self, name: str) -> str:
        if name not in self.keys:
            key = new_key()
            self.store.create_key(name, hash_key(key))
            self.keys[name] = key
        return self.keys[name]

    def request(self, method: str, path: str, body=None, *, key: str | None = None, address: str = "192.0.2.1",
                headers: dict | None = None, raw: bytes | None = None):
        """(status, headers, body bytes) of one request; body: JSON, raw: bytes sent as they are."""
        sent = {PROXY: address, **(headers or {})}
        if key:
            sent["Authorization"] = f"Bearer {key}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, method: str, path: str, body=None, **kw):
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data)

    def events(self, job_id: int, *, last_event_id: str | None = None, until=None, timeout_s: float = 120):
        """The job's server-sent events as (id, name, data) until the stream ends (or `until(event)` is
        true), read from a raw HTTP connection as an EventSource reads them."""
        host, port = self.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        conn.request("GET", f"/api/v1/jobs/{job_id}/events", headers=headers)
        answer = conn.getresponse()
        out, current = [], {}
        try:
            if answer.status != 200:
                return answer.status, []
            while True:
                line = answer.readline()
                if not line:
                    return answer.status, out
                line = line.decode().rstrip("\n")
                if line == "":
                    if "event" in current:
                        out.append((current.get("id"), current["event"], json.loads(current["data"])))
                        if until is not None and until(out[-1]):
                            return answer.status, out
                    current = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    current[name] = value
        finally:
            conn.close()

    @staticmethod
    def wait_until(condition, what: str, deadline_s: float = 120):
        return polling.wait_for(condition, what, deadline_s, interval=0.1)


@contextmanager
def service(tmp: Path, *, executor: bool, db_url: str | None = None, **env_extra):
    url = db_url or f"sqlite:///{tmp / 't2i.db'}"
    store = open_store(url)
    env = dict(os.environ, T2I_DB=url, OMP_NUM_THREADS="1", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
               T2I_TRUSTED_PROXY_HEADER=PROXY, T2I_OPERATOR_TOKEN=OPERATOR, **env_extra)
    port = free_port()
    svc = Service(f"http://127.0.0.1:{port}", store, url, env)
    try:
        with open(tmp / "web.log", "wb") as out:
            svc.procs.append(subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "webapp.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        if executor:
            with open(tmp / "executor.log", "wb") as out:
                svc.procs.append(subprocess.Popen(
                    [sys.executable, "job_executor.py", "--device", "cpu", "--poll", "0.2"],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        wait_healthy(f"{svc.base}/_stcore/health", svc.procs[0], tmp / "web.log")
        yield svc
    finally:
        for proc in svc.procs:
            stop(proc)
        store.close()
