"""Prometheus metrics of one node (a private registry, so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Study latency: last instance received -> every result delivered (quiet period included).
LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The node's counters, gauges and latency histogram.

    Parameters
    ----------
    queue_depth, pending_deliveries:
        Read at scrape time (from the store), so they are right after a restart too.
    """

    def __init__(self, *, queue_depth: Callable[[], float] = lambda: 0,
                 pending_deliveries: Callable[[], float] = lambda: 0,
                 workers_alive: Callable[[], float] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_received = Counter(
            "cxr_node_instances_received", "Instances stored and acknowledged", registry=r)
        self.instances_rejected = Counter(
            "cxr_node_instances_rejected", "C-STORE requests answered with a failure",
            ["reason"], registry=r)
        self.associations_rejected = Counter(
            "cxr_node_associations_rejected", "Associations rejected", ["reason"], registry=r)
        self.instances_processed = Counter(
            "cxr_node_instances_processed", "Instances analysed with results", registry=r)
        self.instances_ignored = Counter(
            "cxr_node_instances_ignored", "Instances stored but not analysed (filters)",
            registry=r)
        self.instances_failed = Counter(
            "cxr_node_instances_failed", "Instances refused by the analysis or failed",
            ["state"], registry=r)
        self.results_sent = Counter(
            "cxr_node_results_sent", "Result instances delivered", ["destination"], registry=r)
        self.delivery_failures = Counter(
            "cxr_node_delivery_failures", "Failed delivery attempts", ["destination"],
            registry=r)
        self.deliveries_dead = Counter(
            "cxr_node_deliveries_dead", "Deliveries dead-lettered", ["destination"],
            registry=r)
        self.deliveries_in_doubt = Counter(
            "cxr_node_deliveries_in_doubt",
            "Deliveries whose last C-STORE got no status, by how they were settled "
            "(held: the destination's C-FIND found it; resent)",
            ["destination", "settled"], registry=r)
        self.latency = Histogram(
            "cxr_node_study_latency_seconds",
            "Last instance received to results delivered, per study and destination",
            buckets=LATENCY_BUCKETS, registry=r)
        Gauge("cxr_node_queue_depth", "Studies queued or being processed",
              registry=r).set_function(queue_depth)
        Gauge("cxr_node_deliveries_pending", "Deliveries waiting to be sent",
              registry=r).set_function(pending_deliveries)
        Gauge("cxr_node_workers_alive", "Worker threads with a live lease, all processes",
              registry=r).set_function(workers_alive)
