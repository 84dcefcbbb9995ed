"""``/healthz`` and Prometheus ``/metrics`` over a small HTTP server.

``/healthz`` answers 200 while the node can accept and process studies (the engine may
still be loading: receiving works meanwhile) and 503 when it cannot (engine failed to
load, storage nearly full); the JSON body says which.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicom_node.metrics import Metrics


class HealthServer:
    """Serves health and metrics in a background thread.

    Parameters
    ----------
    health:
        Returns ``(healthy, details)``; called per request.
    """

    def __init__(self, *, address: str, port: int, metrics: Metrics,
                 health: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        handler = _handler_class(metrics, health)
        self._server = ThreadingHTTPServer((address, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]]
                   ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/healthz":
                healthy, details = health()
                body = json.dumps({"status": "ok" if healthy else "unhealthy", **details})
                self._reply(200 if healthy else 503, "application/json", body.encode())
            elif self.path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            else:
                self._reply(404, "text/plain", b"not found\n")

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes every few seconds would drown the node's own log

    return Handler
