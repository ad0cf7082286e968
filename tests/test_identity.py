"""Who a request comes from (t2i/web/visitor.py): the client address limits are keyed on, the visitor
cookie the real server sets, and, in a real browser, that a link copied from a page hands over nothing."""

import os
import subprocess
import urllib.request

import pytest
from conftest import absent

from t2i.paths import ROOT
from t2i.store import open_store
from t2i.web.visitor import COOKIE, LOCAL, AddressUnreadable, client_address, log_unreadable, new_key, valid_key
from t2i.web.visitor import visitor_of
from webserver import free_port, stop, wait_healthy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 30_000
XFF = "X-Forwarded-For"


# --- the key and the address ----------------------------------------------------------------------

def test_the_store_keeps_a_hash_of_the_key_not_the_key():
    key = new_key()
    assert valid_key(key) and len(visitor_of(key)) == 32 and key not in visitor_of(key)
    assert visitor_of(key) == visitor_of(key) != visitor_of(new_key())
    assert not valid_key("0123456789abcdef" * 2) and not valid_key(None) and not valid_key(key + "=")


@pytest.mark.parametrize("peer,values,header,expected", [
    ("198.51.100.7", [], None, "198.51.100.7"),
    (None, [], None, LOCAL),                                             # loopback, as Streamlit reports it
    (None, ["203.0.113.9"], None, LOCAL),                                # a header nobody trusted is not read
    (None, ["6.6.6.6, 203.0.113.9"], XFF, "203.0.113.9"),                # the right-most: what the proxy added
    (None, ["6.6.6.6", "7.7.7.7, 203.0.113.9"], XFF, "203.0.113.9"),     # repeated header lines
    ("198.51.100.7", [], XFF, "198.51.100.7"),                           # no header: the peer
    ("2001:db8:1:2:aaaa::1", [], None, "2001:db8:1:2::/64"),             # IPv6 per /64
    (None, ["2001:db8:1:2:bbbb::9"], XFF, "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", [], None, "198.51.100.7"),                   # IPv4-mapped IPv6
    (None, ["[2001:db8::1]"], XFF, "2001:db8::/64"),
])
def test_client_address(peer, values, header, expected):
    assert client_address(peer, values, header) == expected


FWD = "Forwarded"


@pytest.mark.parametrize("values,header,expected", [
    # X-Forwarded-For entries with ports (nginx's $remote_addr:$remote_port, HAProxy, cloud balancers)
    (["203.0.113.7:4711"], XFF, "203.0.113.7"),
    (["6.6.6.6:1, 203.0.113.7:4711"], XFF, "203.0.113.7"),
    (["[2001:db8::1]:443"], XFF, "2001:db8::/64"),
    (["2001:db8:5:6::1"], XFF, "2001:db8:5:6::/64"),                     # a bare IPv6 address: no port possible
    (["::ffff:203.0.113.7"], XFF, "203.0.113.7"),
    (["[::ffff:203.0.113.7]:80"], XFF, "203.0.113.7"),
    ([" 203.0.113.7 ,  "], XFF, "203.0.113.7"),                           # blanks and an empty tail entry
    (["_hidden"], XFF, "_hidden"),                                        # an obfuscated identifier is the key
    # RFC 7239 Forwarded: the right-most element's for=, whatever else it carries, in any case
    (["for=192.0.2.60;proto=http;by=203.0.113.43"], FWD, "192.0.2.60"),
    (["For=192.0.2.60;Proto=https"], FWD, "192.0.2.60"),
    (["proto=https;for=192.0.2.60:8080"], FWD, "192.0.2.60"),
    (['for="[2001:db8:cafe::17]:4711"'], FWD, "2001:db8:cafe::/64"),
    (['for="[2001:db8:cafe::17]"'], FWD, "2001:db8:cafe::/64"),
    (['for="_gazonk"'], FWD, "_gazonk"),
    (["for=_hidden;by=_proxy"], FWD, "_hidden"),
    (['for="_x:_port"'], FWD, "_x"),                                    # an obfuscated node and port
    (['for="192.0.2.43:_obfport"'], FWD, "192.0.2.43"),
    (["for=6.6.6.6, for=198.51.100.17"], FWD, "198.51.100.17"),          # several elements: the right-most
    (["for=6.6.6.6", "for=198.51.100.17;proto=https"], FWD, "198.51.100.17"),   # several header lines
    (['for=6.6.6.6;by="a,b;c", for=198.51.100.17'], FWD, "198.51.100.17"),     # separators inside quotes
    (['for=unknown, for="[2001:db8::9]:1"'], FWD, "2001:db8::/64"),      # unknown left of it: not ours to read
    (["for=192.0.2.60"], "forwarded", "192.0.2.60"),                     # the header's name in any case
])
def test_proxy_headers_with_ports_and_rfc_7239(values, header, expected):
    assert client_address("10.0.0.2", values, header) == expected


@pytest.mark.parametrize("values,header,reason", [
    (["203.0.113.9, not-an-address"], XFF, "not an IP address"),         # a broken last entry: not the one left of it
    (["203.0.113.7:http"], XFF, "port"),
    (["[2001:db8::1"], XFF, "bracketed"),
    (["[2001:db8::1]443"], XFF, "bracketed"),
    (["unknown"], XFF, "unknown"),
    (["300.1.2.3"], XFF, "not an IP address"),
    (["1" * 1000], XFF, "longer"),
    (["for=unknown"], FWD, "unknown"),
    (["for=192.0.2.60, for=UNKNOWN;proto=http"], FWD, "unknown"),
    (["proto=https;by=203.0.113.43"], FWD, "exactly one for="),
    (["for=1.2.3.4;for=5.6.7.8"], FWD, "exactly one for="),
    (["for=192.0.2.60, garbage"], FWD, "name=value"),
    (['for="[2001:db8:cafe::17]:4711'], FWD, "left open"),              # an unclosed quote
    # a client's open quote would swallow the comma the proxy appends: read, it would name the client's pick
    (['for=9.9.9.9;x=", for=198.51.100.17'], FWD, "left open"),
    (['for=9.9.9.9;x="\\, for="[2001:db8::17]"'], FWD, "left open"),   # an escape eating the comma
    (['"9.9.9.9, 198.51.100.17"'], XFF, "not an IP address"),         # no quoting in X-Forwarded-For
    (["for=192.0.2.60:99999999"], FWD, "port"),
    (["for=_"], FWD, "not an IP address"),
    (["203.0.113.7"], FWD, "name=value"),                                # X-Forwarded-For's form in Forwarded
])
def test_an_unreadable_proxy_entry_is_refused_not_merged_into_the_peers_quota(values, header, reason):
    """Behind the proxy the peer is the proxy: falling back to it would put every such visitor on one quota."""
    with pytest.raises(AddressUnreadable) as caught:
        client_address("10.0.0.2", values, header)
    assert reason in caught.value.reason
    assert "\n" not in str(caught.value) and "10.0.0.2" not in str(caught.value)


def test_a_flood_of_unreadable_headers_is_logged_once_per_reason(caplog, monkeypatch):
    import logging

    from t2i.web import visitor

    monkeypatch.setattr(visitor, "_logged_reasons", set())

    log = logging.getLogger("t2i.test-identity")
    logged = []
    with caplog.at_level(logging.WARNING, logger=log.name):
        for value in [f"garbage-{i}" for i in range(500)] + ["unknown"] * 500 + ["garbage-again", "1.2.3.4:x"]:
            try:
                client_address(None, [value], XFF)
            except AddressUnreadable as error:
                logged.append(log_unreadable(error, log))
    assert len(logged) == 1002 and sum(logged) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "'garbage-0'" in lines[0] and "unknown" in lines[1] and "port" in lines[2]


def test_a_megabyte_of_header_is_read_in_linear_time():
    """Each character is looked at a bounded number of times: a hostile header cannot stall the page."""
    values = ['for="' + "\\," * 300_000 + '", for=198.51.100.17', "for=1.1.1.1;" * 80_000 + "x"]
    assert client_address(None, values[:1], FWD) == "198.51.100.17"
    with pytest.raises(AddressUnreadable):
        client_address(None, values[1:], FWD)


@pytest.mark.parametrize("headers,secure", [
    ([(b"forwarded", b"for=192.0.2.60;proto=https;by=203.0.113.43")], True),
    ([(b"Forwarded", b'for="[2001:db8::1]:443";Proto="https"')], True),
    ([(b"forwarded", b"proto=https, for=192.0.2.60;proto=http")], False),   # the client's element: not read
    ([(b"forwarded", b"for=192.0.2.60")], False),
    ([(b"forwarded", b'for=1.2.3.4;x=", proto=https')], False),              # a quote left open
    ([(b"x-forwarded-proto", b"https")], True),
])
def test_the_cookie_is_secure_when_the_forwarded_proxy_says_https(monkeypatch, headers, secure):
    from t2i.web.visitor import _https

    monkeypatch.setenv("T2I_TRUSTED_PROXY_HEADER", "Forwarded")
    assert _https({"type": "http", "scheme": "http", "headers": headers}) is secure
    monkeypatch.delenv("T2I_TRUSTED_PROXY_HEADER")
    assert _https({"type": "http", "scheme": "http", "headers": headers}) is False   # no proxy: headers unread


def test_a_visitor_rotating_ipv6_addresses_in_their_prefix_stays_one_address():
    seen = {client_address(f"2001:db8:aa:bb:{i:x}::{i:x}", [], None) for i in range(1, 50)}
    assert seen == {"2001:db8:aa:bb::/64"}


# --- the Generate page (AppTest) behind a proxy ----------------------------------------------------

class ProxiedClient:
    """The handshake AppTest lacks (as tests/test_pages.py's Client): a cookie, headers, a loopback peer."""

    def __init__(self):
        self.cookies, self.headers, self.remote_ip = {COOKIE: "6" * 43}, [], None


@pytest.mark.slow
def test_the_page_keys_a_forwarded_visitor_and_refuses_an_unreadable_one_in_one_line(tmp_path, monkeypatch, caplog):
    import logging

    from streamlit.testing.v1 import AppTest

    from t2i.web import visitor

    url = f"sqlite:///{tmp_path / 't2i.db'}"
    monkeypatch.setenv("T2I_DB", url)
    monkeypatch.setenv("T2I_TRUSTED_PROXY_HEADER", "Forwarded")
    monkeypatch.setattr(visitor, "_logged_reasons", set())
    client = ProxiedClient()
    monkeypatch.setattr("streamlit.runtime.context._get_client_context", lambda: client)
    store = open_store(url)

    def submit(forwarded: str, prompt: str):
        client.headers = [("Forwarded", forwarded)]
        at = AppTest.from_file(str(ROOT / "webapp.py"), default_timeout=60)
        at.run()
        at.selectbox(key="preset").select("tiny-vqgan-untrained")
        at.text_area(key="prompt").input(prompt)
        at.text_input(key="iterations").input("1")
        [b for b in at.button if b.label == "Generate"][0].click().run()
        assert not at.exception, at.exception
        return at

    try:
        submit('for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=_proxy', "through the proxy")
        (job,) = store.jobs()
        assert store._one("SELECT address FROM jobs WHERE id = ?", (job.id,))[0] == "2001:db8:cafe::/64"
        with caplog.at_level(logging.WARNING, logger="t2i.web"):
            for _ in range(3):
                at = submit("for=192.0.2.1, for=unknown", "an unknown client")
                assert [e.value for e in at.error] == [str(AddressUnreadable("", ""))]
        assert len(store.jobs()) == 1   # nothing submitted under the proxy's (shared) address
        lines = [r.getMessage() for r in caplog.records if r.name == "t2i.web" and "right-most" in r.getMessage()]
        assert len(lines) == 1 and "'unknown'" in lines[0]
    finally:
        store.close()


# --- the real server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run webapp.py`, as run_webapp.sh starts it, on a fresh database (no executor: the
    jobs stay queued, which is all these tests need)."""
    tmp = tmp_path_factory.mktemp("identity")
    url = f"sqlite:///{tmp / 't2i.db'}"
    store = open_store(url)
    env = dict(os.environ, T2I_DB=url, OMP_NUM_THREADS="1", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    env.pop("T2I_TRUSTED_PROXY_HEADER", None)
    port, log = free_port(), tmp / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / ".venv/bin/streamlit"), "run", "webapp.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/_stcore/health", proc, log)
        yield base, store
    finally:
        stop(proc)
        store.close()


def get(url: str, **headers):
    """The status and the visitor cookies the answer sets (Streamlit sets its own XSRF cookie too)."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return r.status, [c for c in r.headers.get_all("Set-Cookie") or [] if c.startswith(f"{COOKIE}=")]


@pytest.mark.subprocess
def test_a_page_load_sets_an_httponly_key_once(server):
    base, _ = server
    status, cookies = get(f"{base}/", Accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert status == 200 and len(cookies) == 1
    name_value, *attributes = [part.strip() for part in cookies[0].split(";")]
    name, value = name_value.split("=", 1)
    assert name == COOKIE and valid_key(value)
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert any(a.startswith("Max-Age=") and int(a.split("=")[1]) > 86400 * 300 for a in attributes)
    # A browser that has one keeps it; and a page's scripts, styles and images never get one.
    assert get(f"{base}/gallery", Accept="text/html", Cookie=f"{COOKIE}={value}")[1] == []
    assert get(f"{base}/_stcore/health", Accept="*/*")[1] == []
    # A malformed key is replaced.
    assert len(get(f"{base}/", Accept="text/html", Cookie=f"{COOKIE}=guessed")[1]) == 1


# --- in a real browser -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        absent("needs Chromium and playwright: run tests/setup_browser.sh and install requirements-dev.txt")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_app(context, url: str):
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(url)
    expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(
        1, timeout=TIMEOUT_MS)
    return page


@pytest.mark.subprocess
def test_a_copied_link_hands_over_nothing(server, browser):
    """The owner's jobs, their Cancel button and their quota rest on a cookie page scripts cannot read
    and links do not carry: another browser opening the owner's address (or an old ?v= link naming the
    owner) sees none of it, while the owner's own browser keeps it across reloads."""
    from playwright.sync_api import expect

    base, store = server
    owner = browser.new_context()
    page = open_app(owner, f"{base}/")
    [cookie] = [c for c in owner.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and valid_key(cookie["value"])
    assert COOKIE not in page.evaluate("document.cookie")          # page scripts cannot read it
    visitor = visitor_of(cookie["value"])

    page.get_by_label("Prompt").fill("the owner's lighthouse")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("Your recent jobs")).to_be_visible(timeout=TIMEOUT_MS)
    job = store.jobs(submitter=visitor, limit=1)[0]
    assert job.prompt == "the owner's lighthouse"
    shared = page.url
    assert cookie["value"] not in shared and visitor not in shared and "v=" not in shared

    page.reload()                                                      # the same browser: still theirs
    expect(page.get_by_text("Your recent jobs")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("the owner's lighthouse")).to_be_visible()

    stranger = browser.new_context()
    for link in (shared, f"{base}/?v={visitor}"):
        other = open_app(stranger, link)
        expect(other.get_by_text("Your recent jobs")).to_have_count(0)
        expect(other.get_by_text("the owner's lighthouse")).to_have_count(0)
        expect(other.get_by_role("button", name="Cancel")).to_have_count(0)
        assert "v=" not in other.url                                   # an old link's id is dropped
        other.close()
    [theirs] = [c for c in stranger.cookies() if c["name"] == COOKIE]
    assert theirs["value"] != cookie["value"]
    assert store.jobs(submitter=visitor_of(theirs["value"]), limit=5) == []

    page.get_by_role("button", name="Show").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("This job was cancelled.")).to_be_visible(timeout=TIMEOUT_MS)
    assert store.get(job.id).status == "cancelled"
    owner.close()
    stranger.close()


@pytest.mark.subprocess
def test_the_servers_address_limits_hold_for_fresh_browsers(server, browser):
    """One browser (one cookie) more than the default limit, from one address: the last is refused;
    rotating the visitor is free, rotating the address is not."""
    from playwright.sync_api import expect

    from t2i.service.queue import SubmitPolicy

    base, store = server
    limit = SubmitPolicy().max_active_per_address
    assert store.counts()["queued"] == 0
    contexts = [browser.new_context() for _ in range(limit + 1)]
    try:
        for i, context in enumerate(contexts):
            page = open_app(context, f"{base}/")
            page.get_by_label("Prompt").fill(f"fresh browser {i}")
            page.get_by_role("button", name="Generate").click()
            if i < limit:
                expect(page.get_by_text("Your recent jobs")).to_be_visible(timeout=TIMEOUT_MS)
            else:
                expect(page.get_by_text(f"your address already has {limit} jobs queued or running")).to_be_visible(
                    timeout=TIMEOUT_MS)
        assert store.counts()["queued"] == limit
    finally:
        for context in contexts:
            context.close()
        for job in store.jobs(status="queued", limit=10):
            store.cancel(job.id)

