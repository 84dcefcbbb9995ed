"""``/healthz`` and Prometheus ``/metrics`` over a small HTTP server, which also serves
the web face (:mod:`dicom_node.web`) when one is given.

``/healthz`` answers 200 while the node can accept and process studies (the engine may
still be loading: receiving works meanwhile) and 503 when it cannot (engine failed to
load, storage nearly full); the JSON body says which.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicom_node.metrics import Metrics
from dicom_node.web.http import SECURITY_HEADERS, Request, Response

REQUEST_TIMEOUT_S = 30.0
"""A client silent this long mid-request is dropped (one thread per connection)."""


class HealthServer:
    """Serves health and metrics in a background thread.

    Parameters
    ----------
    health:
        Returns ``(healthy, details)``; called per request.
    app:
        Answers every other request (the web face); without one they get 404.
    tls:
        Serve HTTPS with this context.
    """

    def __init__(self, *, address: str, port: int, metrics: Metrics,
                 health: Callable[[], tuple[bool, dict[str, Any]]],
                 app: Callable[[Request], Response] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        handler = _handler_class(metrics, health, app, secure=tls is not None)
        self._server = ThreadingHTTPServer((address, port), handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]],
                   app: Callable[[Request], Response] | None, *, secure: bool
                   ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S
        server_version = "cxr-node"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/healthz":
                healthy, details = health()
                body = json.dumps({"status": "ok" if healthy else "unhealthy", **details})
                self._reply(Response(200 if healthy else 503, body.encode()))
            elif self.path == "/metrics":
                self._reply(Response(200, generate_latest(metrics.registry),
                                     CONTENT_TYPE_LATEST))
            else:
                self._to_app()

        def do_POST(self) -> None:  # noqa: N802
            self._to_app()

        def do_DELETE(self) -> None:  # noqa: N802
            self._to_app()

        def _to_app(self) -> None:
            if app is None:
                self._reply(Response(404, b"not found\n", "text/plain"))
                return
            request = Request(method=self.command, target=self.path, headers=self.headers,
                              body=self.rfile, client=self.client_address[0], secure=secure)
            self._reply(app(request))

        def _reply(self, response: Response) -> None:
            body = response.body
            if response.file is not None:
                body = response.file.read_bytes()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in {**SECURITY_HEADERS, **response.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes every few seconds would drown the node's own log

    return Handler
