"""Shared fixtures: tiny models built from the repository's untrained presets (real classes)."""

import os

import pytest
import torch

# Tests run on 2-core machines; one intra-op thread keeps CPU runs repeatable and avoids
# oversubscription when several test processes run at once.
torch.set_num_threads(1)
os.environ.setdefault("T2I_CHECKPOINTS", os.path.join(os.path.dirname(__file__), "_no_checkpoints"))


def absent(reason: str):
    """An outside part (a server, a browser, shared fixtures) is missing: a skip that says so, but a
    failure where CI is set, since CI must have every part."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pipelines():
    """Built pipelines of the repository's presets, by name, each built once per session and shared by
    every module that runs jobs on it (a pipeline keeps no job state: jobs carry their own). Tests
    that change one (monkeypatch) put it back; tests of building itself build their own."""
    from t2i.families import build_pipeline
    from t2i.presets import get_preset

    built = {}

    def pipeline(name: str):
        if name not in built:
            built[name] = build_pipeline(get_preset(name), device="cpu")
        return built[name]
    return pipeline


@pytest.fixture(scope="session")
def tiny_models(pipelines):
    return pipelines("tiny-vqgan-untrained")


@pytest.fixture(scope="session")
def pg_admin_url():
    """The local PostgreSQL server tests/run.sh started. CI must have it; elsewhere its tests skip."""
    url = os.environ.get("T2I_TEST_PG_URL")
    if not url:
        absent("no PostgreSQL server (T2I_TEST_PG_URL is not set): run the suite through tests/run.sh")
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


# --- tiers (pyproject.toml declares the markers; `bash tests/run.sh --fast` leaves them out) ---------

# Modules this branch leaves alone carry their marks here: test name -> marks.
MARKS_ELSEWHERE = {
    "test_flowers_world.py": {"test_train_demo_writes_and_proves_every_file": ("trains", "subprocess"),
                              "test_flowersbench_judges_the_presets_images": ("trains", "subprocess"),
                              "test_the_flowers_srcnn_upscalers_are_offered": ("trains", "subprocess"),
                              "test_gan_steps_must_fill_whole_epochs": ("subprocess",),
                              "test_a_seed_layout_hdf5_file_trains_the_gan": ("trains",)},
}


def pytest_collection_modifyitems(items):
    """Marks what a test's fixtures already say: the real PostgreSQL server (pg_admin_url, or the
    postgres side of store_url) and Chromium (a `browser` fixture). The other tiers are marked by
    module (pytestmark) or by test, where a reader of the test sees them."""
    for item in items:
        for mark in MARKS_ELSEWHERE.get(item.path.name, {}).get(getattr(item, "originalname", item.name), ()):
            item.add_marker(mark)
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if "pg_admin_url" in names or (callspec and callspec.params.get("store_url") == "postgres"):
            item.add_marker(pytest.mark.postgres)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
