"""Defences in front of pynetdicom's association server, before any peer is authenticated.

pynetdicom 3 runs the TLS handshake in its single accept thread without a timeout, reads a
PDU header and body with blocking ``recv`` calls and buffers a PDU of whatever length the
header claims (red team F2, F3, F5). :class:`GuardedServer` changes, per connection:

* accept only in the accept thread; the TLS handshake runs in the connection's own thread
  with ``tls_handshake_timeout_s``;
* a peer address may hold ``max_connections_per_address`` connections (handshaking or
  associated); more are closed at once;
* every PDU must arrive whole within ``pdu_timeout_s`` of its first byte, and a PDU whose
  header claims more than allowed (``max_associate_request_kb`` before the association is
  accepted, the node's maximum PDU length after) is never read: the connection is closed.

Contract of ``on_refused(reason)``: called (on any thread) once per connection refused or
dropped here, with a fixed reason string; it must not raise.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)
UNLIMITED_PDU_CAP = 2**24
"""The most a PDU may hold after association when the node advertises no maximum."""
PDU_SLACK = 1024
"""Bytes a peer's PDU may exceed the advertised maximum by (some peers count headers)."""


@dataclass(frozen=True)
class PeerLimits:
    """What a connection may do before and after it is authenticated."""

    pdu_timeout_s: float
    tls_handshake_timeout_s: float
    max_connections_per_address: int
    max_associate_request_bytes: int
    tls: ssl.SSLContext | None = None


class GuardedSocket:
    """pynetdicom's ``AssociationSocket`` with bounded reads (everything else delegated).

    ``recv(n)`` is what pynetdicom's DUL calls for a PDU header (6 bytes) and then for the
    body it announced; both must arrive within ``pdu_timeout_s``, and a body over the
    limit is refused unread (an empty read: pynetdicom closes the connection).
    """

    def __init__(self, inner: Any, assoc: Association, limits: PeerLimits,
                 on_refused: Callable[[str], None]) -> None:
        self.__dict__.update(_inner=inner, _assoc=assoc, _limits=limits, _refused=on_refused)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def _limit(self) -> int:
        if not self._assoc.is_established:
            return int(self._limits.max_associate_request_bytes)
        advertised = self._assoc.acceptor.maximum_length or UNLIMITED_PDU_CAP
        return int(advertised) + PDU_SLACK

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self._limit():
            reason = ("PDU over the negotiated maximum" if self._assoc.is_established
                      else "association request too large")
            self._refused(reason)
            log.warning("connection dropped", extra={"fields": {"reason": reason}})
            return bytearray()
        raw: socket.socket = self._inner.socket
        deadline = time.monotonic() + self._limits.pdu_timeout_s
        received = bytearray()
        try:
            while len(received) < nr_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._refused("PDU not received in time")
                    raise TimeoutError("PDU not received in time")
                raw.settimeout(remaining)
                chunk = raw.recv(min(2**16, nr_bytes - len(received)))
                if not chunk:
                    break
                received.extend(chunk)
        finally:
            raw.settimeout(self._limits.pdu_timeout_s)  # sends stay bounded too
        return received


class GuardedHandler(RequestHandler):
    """pynetdicom's request handler, with the association's socket guarded."""

    server: GuardedServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        guarded = GuardedSocket(assoc.dul.socket, assoc, self.server.limits,
                                self.server.on_refused)
        setattr(assoc.dul, "socket", guarded)  # noqa: B010 (a proxy, not an AssociationSocket)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """A pynetdicom association server hardened as the module describes.

    Built by ``AE.make_server(..., server_class=GuardedServer, limits=..., on_refused=...)``
    with no ``ssl_context`` (TLS is ``limits.tls``, done off the accept thread); run
    :meth:`serve_forever` in a thread of your own and :meth:`shutdown` to stop.
    """

    daemon_threads = True  # a stalled peer never holds up the node's exit
    block_on_close = False

    def __init__(self, *args: Any, limits: PeerLimits, on_refused: Callable[[str], None],
                 **kwargs: Any) -> None:
        self.limits = limits
        self.on_refused = on_refused
        self._handshaking: dict[str, int] = {}
        self._lock = threading.Lock()
        kwargs["request_handler"] = GuardedHandler
        super().__init__(*args, **kwargs)

    def _connections_from(self, host: str) -> int:
        associated = sum(1 for a in self.active_associations if a.requestor.address == host)
        return associated + self._handshaking.get(host, 0)

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept thread: enforce the per-address cap, then hand over."""
        host = str(client_address[0])
        with self._lock:
            if self._connections_from(host) >= self.limits.max_connections_per_address:
                refused = True
            else:
                refused = False
                self._handshaking[host] = self._handshaking.get(host, 0) + 1
        if refused:
            self.on_refused("too many connections from one address")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection thread
        except Exception:
            self._done_handshaking(host)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """On the connection's thread: timeouts, the TLS handshake, then pynetdicom."""
        host = str(client_address[0])
        try:
            request.settimeout(self.limits.pdu_timeout_s)
            if self.limits.tls is not None:
                request = self._handshake(request)
                if request is None:
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._done_handshaking(host)

    def _handshake(self, raw: socket.socket) -> ssl.SSLSocket | None:
        assert self.limits.tls is not None
        try:
            wrapped = self.limits.tls.wrap_socket(raw, server_side=True,
                                                  do_handshake_on_connect=False)
            wrapped.settimeout(self.limits.tls_handshake_timeout_s)
            wrapped.do_handshake()
            wrapped.settimeout(self.limits.pdu_timeout_s)
            return wrapped
        except (OSError, ValueError) as error:  # ssl.SSLError and timeouts are OSErrors
            self.on_refused("TLS handshake failed")
            log.warning("connection dropped", extra={"fields": {
                "reason": "TLS handshake failed", "error": type(error).__name__}})
            self.shutdown_request(raw)
            return None

    def _done_handshaking(self, host: str) -> None:
        with self._lock:
            left = self._handshaking.get(host, 0) - 1
            if left > 0:
                self._handshaking[host] = left
            else:
                self._handshaking.pop(host, None)

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket; open associations are aborted."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()
        for assoc in self.active_associations:
            assoc.abort()
