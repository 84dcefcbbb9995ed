"""Helpers for the web-face tests: one node with a token, plain HTTP calls, multipart
bodies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.node.node_helpers import NodeProcess, Orthanc, Storescp

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
BOUNDARY = "cxr-test-boundary-7f3a"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebNode:
    node: NodeProcess
    destination: Storescp
    token: str
    root: Path
    orthanc: Orthanc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}"

    def call(self, method: str, path: str, *, token: str | None = "", body: bytes | None = None,
             content_type: str | None = None, cookie: str | None = None) -> Reply:
        """One request; ``token=""`` uses the node's token, ``None`` sends none."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        if cookie:
            headers["Cookie"] = cookie
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return Reply(reply.status, dict(reply.headers), reply.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read())


def multipart(parts: list[bytes], *, part_type: str = "application/dicom") -> tuple[bytes, str]:
    """A ``multipart/related`` STOW-RS body and its Content-Type."""
    chunks = []
    for part in parts:
        chunks += [f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode(), part, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return b"".join(chunks), content_type
