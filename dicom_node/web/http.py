"""Requests and responses of the web face, independent of the HTTP server under them.

The server (:class:`dicom_node.health.HealthServer`) turns each request into a
:class:`Request` and writes back the :class:`Response` the app returns. A handler never
writes to the socket itself, so every answer has a length, a type and the same security
headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.cookies import SimpleCookie
from io import BufferedIOBase, BytesIO
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

SECURITY_HEADERS = {
    # everything the page needs is served by the node itself: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
COPY_CHUNK = 1 << 20
MAX_CHUNK_LINE = 1024


class HttpError(Exception):
    """Ends a request with ``status`` and a one-line reason (never patient data)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Request:
    """One HTTP request; the body is read only by the handler that wants it."""

    method: str
    target: str
    headers: Message
    body: BufferedIOBase
    client: str
    secure: bool = False
    holder: str | None = None
    """Who is authenticated (a token's name), set by the app."""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.target.split("?", 1)[1]) if "?" in self.target else {}

    @property
    def content_length(self) -> int:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HttpError(411, "Content-Length required") from None
        if length < 0:
            raise HttpError(400, "negative Content-Length")
        return length

    def cookie(self, name: str) -> str | None:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header means no cookie
            return None
        morsel = cookies.get(name)
        return morsel.value if morsel is not None else None

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def read_body(self, *, max_bytes: int) -> bytes:
        """The whole body, refused (413) past ``max_bytes``."""
        buffer = BytesIO()
        self.copy_body(buffer, max_bytes=max_bytes)
        return buffer.getvalue()

    def copy_body(self, target: IO[bytes], *, max_bytes: int) -> int:
        """Stream the body into ``target`` (never whole in memory); returns its size.

        A declared length over ``max_bytes`` is refused (413) before anything is read; a
        chunked body (as dicomweb-client sends) as soon as it passes the limit.
        """
        if self.chunked:
            return self._copy_chunked(target, max_bytes)
        remaining = self.content_length
        if remaining > max_bytes:
            raise HttpError(413, f"body larger than {max_bytes // 2**20} MiB")
        size = remaining
        while remaining:
            chunk = self.body.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise HttpError(400, "body shorter than its Content-Length")
            target.write(chunk)
            remaining -= len(chunk)
        return size

    def _copy_chunked(self, target: IO[bytes], max_bytes: int) -> int:
        size = 0
        while True:
            line = self.body.readline(MAX_CHUNK_LINE)
            try:
                length = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HttpError(400, "malformed chunked body") from None
            if length == 0:
                while self.body.readline(MAX_CHUNK_LINE).strip():  # trailers
                    pass
                return size
            size += length
            if size > max_bytes:
                raise HttpError(413, f"body larger than {max_bytes // 2**20} MiB")
            while length:
                chunk = self.body.read(min(COPY_CHUNK, length))
                if not chunk:
                    raise HttpError(400, "chunked body ended early")
                target.write(chunk)
                length -= len(chunk)
            self.body.readline(MAX_CHUNK_LINE)  # the CRLF after the chunk


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    """Served from this file instead of ``body`` (images)."""


def json_response(data: Any, status: int = 200, *,
                  content_type: str = "application/json") -> Response:
    return Response(status, (json.dumps(data, indent=1) + "\n").encode(), content_type)


def error_response(error: HttpError) -> Response:
    response = json_response({"error": error.reason}, error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cxr-node"'
    return response


Handler = Callable[[Request, re.Match[str]], Response]


class Router:
    """``(method, path regex) -> handler``; the first full match wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern), handler))

    def find(self, method: str, path: str) -> tuple[Handler, re.Match[str]]:
        allowed = False
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method:
                return handler, match
            allowed = True
        raise HttpError(405 if allowed else 404,
                        "method not allowed" if allowed else "not found")
