"""The walkthroughs' traffic tool: the span `--judge` hands the monitor flow holds every request
as a server logged it on arrival, and is no wider than the requests' own spread needs (the
monitor judges a window only when its rows cover 90 % of it)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mlsd.walk.traffic import filled_span, send_all


def test_the_judged_span_holds_every_request_as_the_server_logged_it():
    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrivals.append(time.time())  # as the router stamps `at`: on arrival
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.02)  # an answer takes a while
            body = json.dumps({"request_id": str(len(arrivals))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/fraud/score"
        results = asyncio.run(send_all(url, [{"n": i} for i in range(200)], rate=50.0))
    finally:
        server.shutdown()
    assert [r["status"] for r in results] == [200] * 200
    start, end = filled_span(results)
    assert all(start <= at < end for at in arrivals)
    spread = max(arrivals) - min(arrivals)
    assert spread / (end - start) >= 0.9  # the monitor's coverage bar (monitoring.min_coverage)
