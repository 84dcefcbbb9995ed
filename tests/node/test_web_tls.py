"""``[web].tls``: the page and APIs over HTTPS with the node's certificate, TLS 1.2 or
later, and nothing in clear text. In process (the engine is never loaded)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dicom_node.config import ConfigError, config_from_mapping
from dicom_node.health import HealthServer
from dicom_node.node import Node
from tests.node.node_helpers import make_certificate


def _config(tmp_path: Path, *, with_tls: bool = True):  # type: ignore[no-untyped-def]
    key, cert = make_certificate(tmp_path, "localhost")
    data = {"node": {"storage": str(tmp_path / "storage")},
            "security": {"allowed_ae_titles": ["PACS"]}, "web": {"tls": True}}
    if with_tls:
        data["tls"] = {"certificate": str(cert), "private_key": str(key)}
    return config_from_mapping(data), cert


def test_web_tls_needs_the_node_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[web\].tls"):
        _config(tmp_path, with_tls=False)


def test_the_web_face_speaks_only_tls_1_2_or_later(tmp_path: Path) -> None:
    config, cert = _config(tmp_path)
    node = Node(config=config)
    server = HealthServer(address="127.0.0.1", port=0, metrics=node.metrics,
                          health=lambda: (True, {}), app=node.web, tls=node._http_tls())
    server.start()
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        trusted.check_hostname = False
        url = f"https://127.0.0.1:{server.port}/api/session"
        with urllib.request.urlopen(url, context=trusted, timeout=10) as reply:
            assert json.loads(reply.read()) == {"holder": None}
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, context=old, timeout=10)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/session", timeout=10)
    finally:
        server.stop()
        node.store.close()
