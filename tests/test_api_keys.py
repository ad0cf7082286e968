"""The API's parts below the server: API keys in the store on both backends (schema version 8) and
`python -m t2i keys`; reading a caller from a request; what event streams poll (watch); a retry that
counts against the limits (retry_limited); TCP_NODELAY for the server's connections."""

from __future__ import annotations

import subprocess
import sys

import pytest

from t2i.api.auth import KEY_PREFIX, hash_key, new_key
from t2i.paths import ROOT
from t2i.store import open_store


def test_keys_are_kept_as_hashes_named_once_and_revoked(store_url):
    store = open_store(store_url)
    try:
        key = new_key()
        assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43 and new_key() != key
        made = store.create_key("alice", hash_key(key))
        assert store.key_by_hash(hash_key(key)) == made and made.revoked_at is None
        assert store.key_by_hash(hash_key(key + "x")) is None
        with pytest.raises(ValueError, match="a key named 'alice' exists"):
            store.create_key("alice", hash_key(new_key()))
        assert [k.name for k in store.api_keys()] == ["alice"]   # the refused one wrote nothing
        assert store.revoke_key("alice") and not store.revoke_key("alice")
        assert store.key_by_hash(hash_key(key)) is None
        # The name is free again, for a new submitter: the old key's jobs are not the new key's.
        again = store.create_key("alice", hash_key(new_key()))
        assert again.submitter != made.submitter
        listed = store.api_keys()
        assert [(k.name, k.revoked_at is None) for k in listed] == [("alice", False), ("alice", True)]
    finally:
        store.close()


@pytest.mark.subprocess
def test_the_keys_command(tmp_path):
    db = f"sqlite:///{tmp_path / 't2i.db'}"
    open_store(db).close()

    def keys(*args):
        return subprocess.run([sys.executable, "-m", "t2i", "keys", *args, "--db", db], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    made = keys("create", "bot-1")
    assert made.returncode == 0
    key = made.stdout.splitlines()[-1]
    assert key.startswith(KEY_PREFIX) and key.strip() == key and " " not in key
    raw = (tmp_path / "t2i.db").read_bytes()
    assert key.encode() not in raw and hash_key(key).encode() in raw   # only the hash is kept
    twice = keys("create", "bot-1")
    assert twice.returncode == 1 and twice.stderr.strip() == (
        "error: a key named 'bot-1' exists; revoke it first or choose another name")
    assert keys("create", "no spaces").returncode == 2
    listed = keys("list")
    assert listed.returncode == 0 and "bot-1" in listed.stdout and "live" in listed.stdout and key not in listed.stdout
    assert keys("revoke", "bot-1").returncode == 0
    assert "revoked" in keys("list").stdout
    gone = keys("revoke", "bot-1")
    assert gone.returncode == 1 and "no live key named 'bot-1'" in gone.stderr


# --- reading the caller from a request (a real Starlette Request over an ASGI scope) ----------------

def request(authorization: str | None = None, peer: str = "203.0.113.5"):
    from starlette.requests import Request

    headers = [(b"authorization", authorization.encode("latin-1"))] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": "/api/v1/queue", "headers": headers,
                    "client": (peer, 5000), "query_string": b""})


@pytest.mark.parametrize("mode, reads, writes", [("", True, False), ("read", True, False), ("none", False, False),
                                                 ("write", True, True), ("bogus", False, False)])
def test_anonymous_access_follows_the_setting(monkeypatch, mode, reads, writes):
    from t2i.api.auth import caller, writer
    from t2i.api.errors import ApiError

    monkeypatch.setenv("T2I_API_ANONYMOUS", mode)
    monkeypatch.delenv("T2I_TRUSTED_PROXY_HEADER", raising=False)
    for check, allowed in ((caller, reads), (writer, writes)):
        if allowed:
            who = check(request())
            assert who.submitter is None and who.address == "203.0.113.5" and not who.owns(None)
        else:
            with pytest.raises(ApiError) as refused:
                check(request())
            assert refused.value.status == 401 and "Bearer" in refused.value.headers["WWW-Authenticate"]


@pytest.mark.parametrize("header, line", [
    ("Token abc", "send the API key as 'Authorization: Bearer <key>' or as the Basic password"),
    ("Bearer ", "send the API key as 'Authorization: Bearer <key>' or as the Basic password"),
    ("Basic !!!", "Basic credentials are not base64 of user:key"),
    ("Basic " + __import__("base64").b64encode(b"user-without-password").decode(),
     "send the API key as 'Authorization: Bearer <key>' or as the Basic password"),
    ("Bearer " + "k" * 600, "the Authorization header is too long to hold a key"),
])
def test_malformed_credentials_are_one_line_401s(header, line):
    from t2i.api.auth import caller
    from t2i.api.errors import ApiError

    with pytest.raises(ApiError) as refused:
        caller(request(header))
    assert (refused.value.status, refused.value.message) == (401, line)


def test_the_operator_token_and_loopback(monkeypatch):
    from t2i.api.auth import caller
    from t2i.web.visitor import LOCAL

    monkeypatch.setenv("T2I_OPERATOR_TOKEN", "op-secret")
    monkeypatch.delenv("T2I_TRUSTED_PROXY_HEADER", raising=False)
    who = caller(request("Bearer op-secret", peer="127.0.0.1"))
    assert who.operator and who.owns("apikey-9") and who.address == LOCAL   # loopback: the pages' "local"


def test_watch_reads_many_jobs_in_one_statement(store_url):
    """What the event streams poll (t2i/store/sql_watch.py): status, attempt, step, place, newest frame."""
    from t2i.store.sql_watch import CHUNK

    store = open_store(store_url)
    try:
        spec = {"prompt": "p", "preset": "x"}
        ids = [store.submit(spec, batch_key="k", total=5) for _ in range(3)]
        job = store.claim("w", 60)
        assert job.id == ids[0] and store.progress(job.lease, 2, 0.5).alive
        assert store.add_frame(job.lease, 1, b"png")
        seen = store.watch(ids + [ids[-1] + 1000] + list(range(10**6, 10**6 + CHUNK)))   # unknown ids left out
        assert sorted(seen) == ids
        running, second, third = (seen[i] for i in ids)
        assert (running.status, running.attempts, running.step, running.position, running.frame_step) == (
            "running", 1, 2, None, 1)
        assert (second.position, third.position, third.frame_step) == (1, 2, None)
    finally:
        store.close()


def test_no_delay_reaches_the_connections_a_listener_accepts():
    """Streamlit's server socket is made with protocol 0, so asyncio leaves Nagle on for its
    connections; no_delay() turns it off on the listener, and Linux hands that on to what it accepts."""
    import socket

    from t2i.api.app import no_delay

    with socket.socket(socket.AF_INET) as listener:   # as Streamlit binds it: no protocol given
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert no_delay() >= 1
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_retry_over_the_api_counts_against_the_address(store_url):
    from t2i.store.base import Quota, QuotaReached

    store = open_store(store_url)
    try:
        spec = {"prompt": "p", "preset": "x"}
        quota = Quota(max_active=1, max_per_minute=100, max_queued=100)
        first = store.submit_limited(spec, address="192.0.2.7", quota=quota, batch_key="k", total=5)
        assert store.cancel(first) == "cancelled"
        again = store.retry_limited(first, address="192.0.2.7", quota=quota)
        assert store.get(again).retry_of == first and store.get(again).status == "queued"
        # The retry holds the address's one active slot: a second retry is refused and writes nothing.
        assert store.cancel(store.submit(spec, batch_key="k", total=5)) == "cancelled"
        before = store.counts()
        with pytest.raises(QuotaReached) as reached:
            store.retry_limited(first, address="192.0.2.7", quota=quota)
        assert reached.value.bound == "active" and store.counts() == before
        with pytest.raises(ValueError, match="only failed or cancelled"):
            store.retry_limited(again, address="192.0.2.8", quota=quota)
    finally:
        store.close()


def test_a_store_that_fails_is_a_503_line_and_a_replaced_file_is_reopened(tmp_path, monkeypatch):
    """The real application in process (Starlette's TestClient speaks ASGI to it) on a real SQLite file
    that is deleted under it: one JSON line with 503, then the next request opens the new file."""
    import json
    import os

    from starlette.testclient import TestClient

    from t2i.api.app import create_app
    from t2i.api.service import forget_store

    db = tmp_path / "t2i.db"
    monkeypatch.setenv("T2I_DB", f"sqlite:///{db}")
    forget_store()
    try:
        client = TestClient(create_app(), raise_server_exceptions=False)
        assert client.get("/api/v1/queue").status_code == 200
        os.remove(db)
        open_store(f"sqlite:///{db}").close()   # another file at the path now
        gone = client.get("/api/v1/queue")
        body = json.loads(gone.text)
        assert gone.status_code == 503 and "\n" not in gone.text and body["status"] == 503
        assert body["error"] == "the service cannot take jobs right now; please try again later"
        assert gone.headers["Retry-After"] == "5"
        assert client.get("/api/v1/queue").status_code == 200
    finally:
        forget_store()
