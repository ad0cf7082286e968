"""A visitor of the real pages: a Streamlit session over the web app's own websocket
(/_stcore/stream, as the browser opens it), asking each page in turn to run and timing it to the
server's "script finished". The page scripts run on the server against the store, so a stall in any
session's thread, or a store fault reaching a visitor as a traceback, shows here.

No browser: Chromium would take a core of the two; the server does the same work for this client.
A load while the web app is down because the run killed it is not counted.
"""

from __future__ import annotations

import asyncio
import threading
import time

PAGES = ("", "gallery", "queue_page", "vote", "leaderboard")  # "": the default page, Generate


async def _load(port: int, page: str, bound_s: float) -> list[str]:
    """The page run once; returns the exceptions it showed (first line each)."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    shown = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=2**26, open_timeout=bound_s) as ws:
        ask = BackMsg()
        ask.rerun_script.page_name = page
        await ws.send(ask.SerializeToString())
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(await asyncio.wait_for(ws.recv(), bound_s))
            kind = msg.WhichOneof("type")
            if kind == "delta" and msg.delta.new_element.WhichOneof("type") == "exception":
                e = msg.delta.new_element.exception
                shown.append(f"{e.type}: {e.message.splitlines()[0] if e.message else ''}"[:160])
            elif kind == "page_not_found":
                shown.append("page not found")
            elif kind == "script_finished":
                return shown


class PageVisitor:
    """`seconds`: each load's time (the app up); `problems`: loads over the bound, failed, or showing
    an exception."""

    def __init__(self, port: int, health, bound_s: float, interval_s: float = 1.0):
        self.port, self.health, self.bound_s, self.interval_s = port, health, bound_s, interval_s
        self.seconds: list[float] = []
        self.problems: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="chaos-pages")

    def _loop(self) -> None:
        turn = 0
        while not self.stop.wait(self.interval_s):
            page = PAGES[turn % len(PAGES)]
            turn += 1
            down_before = self.health.down_since is not None
            start = time.monotonic()
            try:
                shown = asyncio.run(asyncio.wait_for(_load(self.port, page, self.bound_s), self.bound_s * 2))
                what = None
            except Exception as e:  # noqa: BLE001 - a refused connection, a timeout: judged below
                shown, what = [], f"{type(e).__name__}: {str(e)[:100]}"
            seconds = time.monotonic() - start
            if down_before or self.health.down_since is not None:
                continue  # the run killed the app during this load
            name = page or "generate"
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
