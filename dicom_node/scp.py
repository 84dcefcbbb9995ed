"""Verification and Storage SCP: who may associate, what is accepted, when Success is sent.

Event handler contracts (pynetdicom runs them on the association's thread):

* Before any handler: :mod:`dicom_node.guard` bounds what an unauthenticated connection
  may cost (timeouts, per-address cap, PDU sizes, TLS off the accept thread), and
  pynetdicom rejects a called AE title other than the node's.
* ``EVT_REQUESTED`` -> :meth:`StorageSCP.on_requested`: rejects the association (an
  A-ASSOCIATE-RJ, before any data) when the calling AE title or peer address is not
  allowed, or when the storage folder is nearly full (transient: the peer retries later).
* ``EVT_C_STORE`` -> :meth:`StorageSCP.on_store`: returns ``0x0000`` only after the
  instance is fsync'ed into the spool and registered in the store; otherwise a failure
  status with an ErrorComment that names the problem (never patient data). ``0xC000``
  also answers an input that would cost more memory to decode than ``[limits]`` allows
  (declared pixel size, codestream size differing from Rows/Columns, inflated size),
  checked before anything is decoded.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.config import NodeConfig
from dicom_node.guard import GuardedServer, PeerLimits
from dicom_node.ingest import SUCCESS, Ingest, Received
from dicom_node.metrics import Metrics
from dicom_node.spool import Spool
from dicom_node.store import Store

VERIFICATION = "1.2.840.10008.1.1"
"""Verification SOP Class (C-ECHO)."""
log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
    JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless,
]
MAXIMUM_PDU_BYTES = 256 * 1024
# A-ASSOCIATE-RJ (result, source, diagnostic)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)   # permanent, service user, calling AE unknown
REJECT_NO_REASON = (0x01, 0x01, 0x01)    # permanent, service user, no reason given
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, presentation, local limit exceeded


def _failure(status: int, comment: str) -> Dataset:
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]  # LO: at most 64 characters
    return response


class StorageSCP:
    """The node's listening side.

    Parameters
    ----------
    config:
        Node configuration (AE title, port, allowlists, filters, disk threshold, TLS).
    spool:
        Where received instances are written.
    store:
        Where they are registered.
    metrics:
        Counters to update.
    on_received:
        Called after each newly registered instance (e.g. to wake the scheduler).
    """

    def __init__(self, *, config: NodeConfig, spool: Spool, store: Store, metrics: Metrics,
                 on_received: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.spool = spool
        self.metrics = metrics
        self.ingest = Ingest(config=config, spool=spool, store=store, metrics=metrics,
                             on_received=on_received)
        self._networks = [ipaddress.ip_network(n, strict=False) for n in config.allowed_ips]
        self._server: GuardedServer | None = None

    def build_ae(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        ae.add_supported_context(VERIFICATION)
        offered = set(self.config.filters.sop_classes)
        for uid in self.config.filters.sop_classes:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        if self.config.filters.other_instances == "ignore":
            for context in AllStoragePresentationContexts:
                if context.abstract_syntax and context.abstract_syntax not in offered:
                    ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.maximum_associations = 16
        # the largest P-DATA PDU a peer may send (and the guard's limit): 16 KiB, the
        # default, costs one Python round per 16 KiB of a 7 MB CR
        ae.maximum_pdu_size = MAXIMUM_PDU_BYTES
        ae.require_called_aet = True  # A-ASSOCIATE-RJ "called AE title not recognised"
        # CR images are large; do not drop a slow but live peer once associated
        ae.dimse_timeout = ae.network_timeout = 120
        # ARTIM: a connection that sends no A-ASSOCIATE-RQ is closed after this
        ae.acse_timeout = self.config.limits.pdu_timeout_s
        return ae

    def start(self) -> None:
        """Listen in background threads; returns at once.

        Received datasets are streamed to a file as their PDUs arrive, never held in
        memory (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``; its temporary files go to the
        process's temporary folder, which is set to ``incoming/`` so that a received file
        is linked into the spool, not copied).
        """
        _config.STORE_RECV_CHUNKED_DATASET = True
        tempfile.tempdir = str(self.spool.incoming)
        ae = self.build_ae()
        handlers = [(evt.EVT_REQUESTED, self.on_requested), (evt.EVT_C_STORE, self.on_store)]
        limits = self.config.limits
        server = ae.make_server(
            (self.config.bind_address, self.config.port),
            evt_handlers=handlers,  # type: ignore[arg-type]  # pynetdicom types EVT_* oddly
            server_class=GuardedServer, on_refused=self._connection_refused,
            limits=PeerLimits(
                pdu_timeout_s=limits.pdu_timeout_s,
                tls_handshake_timeout_s=limits.tls_handshake_timeout_s,
                max_connections_per_address=limits.max_connections_per_address,
                max_associate_request_bytes=int(limits.max_associate_request_kb * 1024),
                tls=self._ssl_context()))
        assert isinstance(server, GuardedServer)
        self._server = server
        threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True).start()
        log.info("listening", extra={"fields": {
            "ae_title": self.config.ae_title, "port": self.config.port,
            "tls": self.config.tls is not None}})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _connection_refused(self, reason: str) -> None:
        self.metrics.associations_rejected.labels(reason=reason).inc()

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.certificate, tls.private_key)
        if tls.ca_certificates is not None:
            context.load_verify_locations(tls.ca_certificates)
        context.verify_mode = (ssl.CERT_REQUIRED if tls.require_client_certificate
                               else ssl.CERT_NONE)
        return context

    # --- association policy ------------------------------------------------------

    def rejection(self, calling_ae: str, address: str) -> tuple[tuple[int, int, int], str] | None:
        """Why an association from ``calling_ae`` at ``address`` is refused, or None."""
        if calling_ae.strip() not in self.config.allowed_ae_titles:
            return REJECT_CALLING_AE, "calling AE title not allowed"
        if self._networks and not self._address_allowed(address):
            return REJECT_NO_REASON, "peer address not allowed"
        if self.spool.free_mb() < self.config.min_free_disk_mb:
            return REJECT_LOCAL_LIMIT, "storage nearly full"
        return None

    def _address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def on_requested(self, event: evt.Event) -> None:
        primitive = event.assoc.requestor.primitive
        calling_ae = str(primitive.calling_ae_title if primitive else "").strip()
        address = event.assoc.requestor.address
        refused = self.rejection(calling_ae, address)
        if refused is None:
            return
        codes, reason = refused
        self.metrics.associations_rejected.labels(reason=reason).inc()
        # the calling AE title is a device name, not patient data; it helps the operator
        log.warning("association rejected", extra={"fields": {
            "reason": reason, "calling_ae": calling_ae[:16], "peer": address}})
        # pynetdicom skips negotiation after a reject sent from EVT_REQUESTED; kill() waits
        # until the A-ASSOCIATE-RJ left, as pynetdicom does for its own rejections
        event.assoc.acse.send_reject(*codes)
        event.assoc.kill()

    # --- C-STORE -----------------------------------------------------------------

    def on_store(self, event: evt.Event) -> int | Dataset:
        """pynetdicom has streamed the dataset to a file in ``incoming/`` (see
        :meth:`start`); :class:`~dicom_node.ingest.Ingest` checks it from there and
        hard-links it into the spool."""
        request = event.request
        assert isinstance(request, C_STORE)  # only C-STORE is handled here
        verdict = self.ingest.accept(Received(
            path=Path(event.dataset_path), sop_uid=request.AffectedSOPInstanceUID,
            sop_class=request.AffectedSOPClassUID,
            transfer_syntax=str(event.context.transfer_syntax),
            sender=event.assoc.requestor.ae_title))
        if verdict.accepted:
            return SUCCESS
        return _failure(verdict.status, verdict.reason or "")
