"""A visitor of the real pages: a Streamlit session over the web app's own websocket
(/_stcore/stream, as the browser opens it), asking each page in turn to run and timing it to the
server's "script finished". The page scripts run on the server against the store, so a stall in any
session's thread, or a store fault reaching a visitor as a traceback, shows here.

Every third turn it opens one of tests/hostile.py's PNGs on the Generate page as a browser does:
"Open a PNG" switched on, the file uploaded (file URLs asked over the websocket, an HTTP PUT with the
XSRF cookie's token), then the run whose callback reads it. What the page does with the file then
runs in the server's thread, where a slow parser stalls every session and the health check.

No browser: Chromium would take a core of the two; the server does the same work for this client.
A load while the web app is down because the run killed it is not counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid

PAGES = ("", "gallery", "queue_page", "vote", "leaderboard")  # "": the default page, Generate


async def _run(ws, page: str, widgets, seen: dict, bound_s: float) -> list[str]:
    """One run of `page` with these widget states; notes the session id and widget ids in `seen`;
    returns the exceptions the page showed (first line each)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ask = BackMsg()
    ask.rerun_script.page_name = page
    ask.rerun_script.widget_states.widgets.extend(widgets)
    await ws.send(ask.SerializeToString())
    shown = []
    while True:
        msg = ForwardMsg()
        msg.ParseFromString(await asyncio.wait_for(ws.recv(), bound_s))
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            seen["session"] = msg.new_session.initialize.session_id
        elif kind == "delta":
            element = msg.delta.new_element
            what = element.WhichOneof("type")
            if what in ("checkbox", "file_uploader"):
                seen[getattr(element, what).id.rsplit("-", 1)[-1]] = getattr(element, what).id
            elif what == "exception":
                e = element.exception  # redacted by the server (no type): its traceback is in the web app's log
                shown.append(f"{e.type or 'an exception'}: {(e.message.splitlines() or [''])[0]}"[:100])
        elif kind == "page_not_found":
            shown.append("page not found")
        elif kind == "script_finished":
            return shown


def _put(url: str, data: bytes, xsrf: str, cookie: str, bound_s: float) -> None:
    """The file as a browser's uploader sends it: one multipart field, the XSRF token in a header."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hostile.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="PUT", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Xsrftoken": xsrf, "Cookie": cookie})
    with urllib.request.urlopen(request, timeout=bound_s) as answer:
        answer.read()


async def _upload(ws, base: str, xsrf: str, cookie: str, seen: dict, data: bytes, bound_s: float):
    """The file's URLs asked over the websocket, the file PUT there: the uploader's widget state."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    ask = BackMsg()
    ask.file_urls_request.request_id, ask.file_urls_request.session_id = "chaos", seen["session"]
    ask.file_urls_request.file_names.append("hostile.png")
    await ws.send(ask.SerializeToString())
    while True:
        msg = ForwardMsg()
        msg.ParseFromString(await asyncio.wait_for(ws.recv(), bound_s))
        if msg.WhichOneof("type") == "file_urls_response":
            urls = msg.file_urls_response.file_urls[0]
            break
    _put(base + urls.upload_url if urls.upload_url.startswith("/") else urls.upload_url, data, xsrf, cookie, bound_s)
    state = WidgetState(id=seen["open_png"])
    info = state.file_uploader_state_value.uploaded_file_info.add()
    info.file_id, info.name, info.size = urls.file_id, "hostile.png", len(data)
    info.file_urls.CopyFrom(urls)
    return state


async def _visit(port: int, page: str, png: bytes | None, bound_s: float) -> tuple[float, list[str]]:
    """(seconds of the timed run, exceptions shown): the page's run, or with `png` the Generate run
    that opens it."""
    import websockets
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + "/_stcore/health", timeout=bound_s) as answer:  # sets the XSRF cookie
        cookie = "; ".join(c.split(";", 1)[0] for c in answer.headers.get_all("Set-Cookie") or [])
    xsrf = next((c.split("=", 1)[1] for c in cookie.split("; ") if c.startswith("_streamlit_xsrf=")), "")
    # the XSRF token rides in the subprotocols, as the browser sends it; no pings: a stalled server is judged by the bound
    protocols = ["streamlit", xsrf] if xsrf else ["streamlit"]
    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=protocols,
                                  additional_headers={"Cookie": cookie, "Origin": base}, max_size=2**26,
                                  open_timeout=bound_s, ping_interval=None) as ws:
        seen: dict = {}
        start = time.monotonic()
        shown = await _run(ws, page, [], seen, bound_s)
        if png is None or "open_png_on" not in seen:  # no form (the page stopped at a store error's line): no upload
            return time.monotonic() - start, shown
        toggle = WidgetState(id=seen["open_png_on"], bool_value=True)
        shown += await _run(ws, page, [toggle], seen, bound_s)
        if "open_png" not in seen:
            return time.monotonic() - start, shown
        upload = await _upload(ws, base, xsrf, cookie, seen, png, bound_s)
        start = time.monotonic()
        shown += await _run(ws, page, [toggle, upload], seen, bound_s)
        return time.monotonic() - start, shown


class PageVisitor:
    """`seconds`: each run's time (the app up); `problems`: runs over the bound, failed, or showing
    an exception."""

    def __init__(self, port: int, health, bound_s: float, interval_s: float = 1.0):
        self.port, self.health, self.bound_s, self.interval_s = port, health, bound_s, interval_s
        self.seconds: list[float] = []
        self.problems: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="chaos-pages")

    def _loop(self) -> None:
        from hostile import hostile_pngs

        pngs, turn = list(hostile_pngs().items()), 0
        while not self.stop.wait(self.interval_s):
            page, (case, make) = PAGES[turn % len(PAGES)], pngs[turn // 3 % len(pngs)]
            name = f"generate, opening the PNG '{case}'" if turn % 3 == 2 else page or "generate"
            png = make() if turn % 3 == 2 else None
            turn += 1
            down_before = self.health.down_since is not None
            try:
                seconds, shown = asyncio.run(asyncio.wait_for(_visit(self.port, "" if png else page, png, self.bound_s),
                                                              self.bound_s * 4))
                what = None
            except Exception as e:  # noqa: BLE001 - a refused connection, a timeout: judged below
                seconds, shown, what = 0.0, [], f"{type(e).__name__}: {str(e)[:100]}"
            if down_before or self.health.down_since is not None:
                continue  # the run killed the app during this visit
            if what is not None:
                self.problems.append(f"page {name}: {what}")
                continue
            self.seconds.append(seconds)
            if seconds > self.bound_s:
                self.problems.append(f"page {name}: ran {seconds:.1f} s (bound {self.bound_s:g} s)")
            self.problems += [f"page {name} showed {s}" for s in shown if f"page {name} showed {s}" not in self.problems]

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(self.bound_s * 3)
