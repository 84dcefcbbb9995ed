"""C-STORE SCU (or STOW-RS for a DICOMweb destination): results go to each destination,
one association (or one request) per study, one thread per destination.

Each C-STORE is an *attempt* committed (fsync'ed) before the request goes out; the
destination's status is committed right after, in the transaction that marks the
delivery ``sent`` (never attempted again) or failed. A delivery whose last C-STORE has
no status (the node died during it, or the association was lost) is *in doubt*: DIMSE
has no way to learn whether the destination stored it except asking. With the
destination's ``in_doubt = "c-find"`` the node asks (C-FIND at IMAGE level) and resends
only when the destination does not hold it or cannot answer; with ``"resend"`` (default)
it resends the same file, same SOP Instance UID (cxr_core's UIDs are deterministic),
which a PACS that keeps or replaces stores once and storescp stores twice.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE

from dicom_node.config import Destination, NodeConfig
from dicom_node.metrics import Metrics
from dicom_node.store import Delivery, Store
from dicom_node.stow_client import stow
from dicom_node.supervise import Heartbeat, run_supervised

log = logging.getLogger(__name__)

SENDER_STALE_S = 600.0
"""A round's attempts are bounded by the destination's timeouts; 10 minutes means stuck."""
# Success, and the storage warnings under which the instance was stored all the same
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
FIND_PENDING = frozenset({0xFF00, 0xFF01})
IMAGE_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
"""Study Root Query/Retrieve Information Model - FIND: asks an in-doubt destination."""


class Sender(threading.Thread):
    """Sends one destination's due deliveries until stopped (one thread per destination:
    a hung destination holds up only its own deliveries, which back off and dead-letter
    under the retry policy).

    Parameters
    ----------
    config:
        Retry policy and the node's own AE title (and TLS settings).
    destination:
        The peer this sender serves.
    wake:
        Set by the workers when new deliveries exist, so they go out at once.
    owner:
        This process in the store: deliveries are claimed under its lease, so senders
        of several processes never send the same delivery at once.
    """

    def __init__(self, *, config: NodeConfig, destination: Destination, store: Store,
                 metrics: Metrics, stop: threading.Event, wake: threading.Event,
                 owner: str = "local", poll_s: float = 0.5) -> None:
        super().__init__(name=f"sender-{destination.name}", daemon=True)
        self.config = config
        self.destination = destination
        self.store = store
        self.metrics = metrics
        self.stop_event = stop
        self.wake = wake
        self.poll_s = poll_s
        self.owner = owner
        self.heartbeat = Heartbeat(self.name, stale_after_s=SENDER_STALE_S)

    def run(self) -> None:
        self.store.sync_every_commit()  # this thread's attempts survive a power loss too
        run_supervised(self.heartbeat, self.send_due, stop=self.stop_event,
                       period_s=self.poll_s, wait=self._wait)

    def _wait(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def send_due(self) -> None:
        due = self.store.claim_deliveries(self.destination.name, self.owner)
        for (study_id, _), deliveries in due.items():
            if self.stop_event.is_set():
                return
            if self.destination.stow_url:
                self.stow_study(study_id, self.destination, deliveries)
            else:
                self.send_study(study_id, self.destination, deliveries)

    def stow_study(self, study_id: int, destination: Destination,
                   deliveries: list[Delivery]) -> None:
        """Send one study's pending results to a DICOMweb destination in one request."""
        assert destination.stow_url is not None
        outcome = stow(destination.stow_url, {d.result_uid: d.path for d in deliveries},
                       authorization=destination.authorization,
                       timeout_s=destination.timeout_s)
        for delivery in deliveries:
            error = outcome.errors[delivery.result_uid]
            if error is None:
                self.store.mark_sent(delivery)
                self.metrics.results_sent.labels(destination=delivery.destination).inc()
            else:
                self._failed(delivery, error)
        self._log_if_delivered(study_id, destination)

    def send_study(self, study_id: int, destination: Destination,
                   deliveries: list[Delivery]) -> None:
        """Send one study's pending results to one destination over one association."""
        try:
            headers = [pydicom.dcmread(d.path, stop_before_pixels=True) for d in deliveries]
        except Exception as error:  # a result file the node wrote itself went missing
            for delivery in deliveries:
                self._failed(delivery, f"result file unreadable ({type(error).__name__})")
            return
        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
        ae.connection_timeout = min(10.0, destination.timeout_s)
        for context in {(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID))
                        for h in headers}:
            ae.add_requested_context(context[0], context[1])
        query = destination.in_doubt == "c-find" and any(d.in_doubt for d in deliveries)
        if query:
            ae.add_requested_context(IMAGE_FIND)
        # no server host name: peers are identified by their certificate chain (see
        # _client_context); pynetdicom's hint wants a str, ssl wants None for "none"
        tls_args = (self._client_context(), None) if destination.tls else None
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                             tls_args=tls_args)  # type: ignore[arg-type]
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else (
                "no connection")
            for delivery in deliveries:
                self._failed(delivery, f"association {why}")
            return
        try:
            for delivery, header in zip(deliveries, headers, strict=True):
                if delivery.in_doubt and self._settled_in_doubt(assoc, delivery, header,
                                                                query=query):
                    continue
                self._send_one(assoc, delivery, str(header.SOPClassUID))
        finally:
            if assoc.is_established:
                assoc.release()
        self._log_if_delivered(study_id, destination)

    def _log_if_delivered(self, study_id: int, destination: Destination) -> None:
        if self.store.study_fully_sent(study_id, destination.name):
            latency = time.time() - self.store.study_last_received(study_id)
            self.metrics.latency.observe(latency)
            log.info("study delivered", extra={"fields": {
                "study": study_id, "destination": destination.name,
                "latency_s": round(latency, 3)}})

    def _client_context(self) -> ssl.SSLContext:
        tls = self.config.tls
        assert tls is not None and tls.ca_certificates is not None  # validated in config
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(tls.ca_certificates))
        # the peer is identified by its certificate chain (often issued to an AE, not a
        # host name)
        context.check_hostname = False
        context.load_cert_chain(tls.certificate, tls.private_key)
        return context

    def _settled_in_doubt(self, assoc: object, delivery: Delivery, header: Dataset, *,
                          query: bool) -> bool:
        """An in-doubt delivery: True when the destination's C-FIND says it holds it
        (then ``sent``); False when the caller is to resend it."""
        held = query and self._held(assoc, delivery, header)
        self.metrics.deliveries_in_doubt.labels(
            destination=delivery.destination, settled="held" if held else "resent").inc()
        log.info("delivery in doubt", extra={"fields": {
            "study": delivery.study_id, "destination": delivery.destination,
            "rule": self.destination.in_doubt, "settled": "held" if held else "resent"}})
        return held

    def _held(self, assoc: object, delivery: Delivery, header: Dataset) -> bool:
        """Ask the destination (C-FIND, Study Root, IMAGE level) whether it holds an
        in-doubt delivery; True (and the delivery ``sent``) when it answers with a match.
        No match, a failed query or none at all: False."""
        attempt = self.store.begin_attempt(delivery, "c-find")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = header.StudyInstanceUID
        identifier.SeriesInstanceUID = header.SeriesInstanceUID
        identifier.SOPInstanceUID = delivery.result_uid
        found, final = False, None
        try:
            for status, match in assoc.send_c_find(  # type: ignore[attr-defined]
                    identifier, IMAGE_FIND):
                code = int(status.Status) if status and "Status" in status else None
                if code in FIND_PENDING:
                    found = found or str(getattr(match, "SOPInstanceUID", "")) == (
                        delivery.result_uid)
                else:
                    final = code
        except (ValueError, RuntimeError, OSError) as error:  # e.g. C-FIND not accepted
            self.store.end_attempt(attempt, None, f"query failed ({type(error).__name__})")
            return False
        if found:
            self.store.mark_sent(delivery, attempt=attempt, status=final or 0,
                                 detail="held by the destination (C-FIND)")
            self.metrics.results_sent.labels(destination=delivery.destination).inc()
            return True
        self.store.end_attempt(attempt, final, "not held" if final == 0 else "no answer")
        return False

    def _send_one(self, assoc: object, delivery: Delivery, sop_class: str) -> None:
        if not assoc.is_established:  # type: ignore[attr-defined]
            self._failed(delivery, "association lost")
            return
        if not any(context.abstract_syntax == sop_class
                   for context in assoc.accepted_contexts):  # type: ignore[attr-defined]
            # nothing goes out, so no attempt (and nothing in doubt)
            self._failed(delivery, "not sent (the destination accepted no presentation "
                                   "context for its SOP class)")
            return
        attempt = self.store.begin_attempt(delivery)  # committed before the request
        try:
            status = assoc.send_c_store(delivery.path)  # type: ignore[attr-defined]
        except (ValueError, RuntimeError, OSError) as error:
            # e.g. the association broke while sending: whether it arrived is unknown
            self._failed(delivery, f"not sent ({type(error).__name__}: {str(error)[:120]})",
                         attempt=attempt)
            return
        code = int(status.Status) if status and "Status" in status else None
        if code in STORED_STATUSES:
            self.store.mark_sent(delivery, attempt=attempt, status=code)
            self.metrics.results_sent.labels(destination=delivery.destination).inc()
        else:
            self._failed(delivery, "no response" if code is None else f"status 0x{code:04X}",
                         attempt=attempt, status=code)

    def _failed(self, delivery: Delivery, error: str, *, attempt: int | None = None,
                status: int | None = None) -> None:
        dead = self.store.mark_failed(delivery, error, self.config.retry, attempt=attempt,
                                      status=status)
        self.metrics.delivery_failures.labels(destination=delivery.destination).inc()
        if dead:
            self.metrics.deliveries_dead.labels(destination=delivery.destination).inc()
        log.warning("delivery failed", extra={"fields": {
            "study": delivery.study_id, "destination": delivery.destination, "error": error,
            "attempt": delivery.attempts + 1, "dead": dead}})
