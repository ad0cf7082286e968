"""Shared fixtures: tiny models built from the repository's untrained presets (real classes)."""

import os

import pytest
import torch

# Tests run on 2-core machines; one intra-op thread keeps CPU runs repeatable and avoids
# oversubscription when several test processes run at once.
torch.set_num_threads(1)
os.environ.setdefault("T2I_CHECKPOINTS", os.path.join(os.path.dirname(__file__), "_no_checkpoints"))


@pytest.fixture(scope="session")
def tiny_models():
    from t2i.families import build_pipeline
    from t2i.presets import get_preset

    return build_pipeline(get_preset("tiny-vqgan-untrained"), device="cpu")


@pytest.fixture(scope="session")
def pg_admin_url():
    """The local PostgreSQL server tests/run.sh started. CI must have it; elsewhere its tests skip."""
    url = os.environ.get("T2I_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("T2I_TEST_PG_URL is not set: run the suite through tests/run.sh")
        pytest.skip("no PostgreSQL server: run through tests/run.sh (or set T2I_TEST_PG_URL)")
    return url


@pytest.fixture
def pg_url(pg_admin_url):
    """A throwaway database, dropped afterwards."""
    from t2i.store.postgres import temporary_database

    with temporary_database(pg_admin_url, "t2i_test_") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """Every store test runs against both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 't2i.db'}"
    return request.getfixturevalue("pg_url")


def serve_http(handler, monkeypatch, **state):
    """A loopback HTTP server for `handler` (a BaseHTTPRequestHandler class) in a thread, with no proxy
    in the way; `state` becomes attributes of the server (what the handler reads). A generator: use
    it from a fixture with `yield from`."""
    import threading
    from http.server import ThreadingHTTPServer

    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    for name, value in state.items():
        setattr(srv, name, value)
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)
