"""Prometheus metrics of one node (a registry per node, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("tidings_connections", "Open WebSocket connections", registry=r)
        self.subscriptions = Gauge(
            "tidings_subscriptions", "Session subscriptions on open connections", registry=r
        )
        self.events_appended = Counter(
            "tidings_events_appended", "Events appended to session logs", registry=r
        )
        self.duplicates = Counter(
            "tidings_duplicate_sends", "Sends answered with an existing event", registry=r
        )
        self.frames_sent = Counter(
            "tidings_frames_sent", "WebSocket frames written (a batch counts once)", registry=r
        )
        self.bytes_sent = Counter(
            "tidings_bytes_sent", "WebSocket payload bytes written", registry=r
        )
        self.deliveries = Counter(
            "tidings_event_deliveries", "Events queued to subscribers", registry=r
        )
        self.rate_limited = Counter(
            "tidings_rate_limited", "Requests refused with rate_limited", registry=r
        )
        self.slow_consumer_closes = Counter(
            "tidings_slow_consumer_closes", "Connections closed with 4009", registry=r
        )
        self.origin_refused = Counter(
            "tidings_origin_refused", "WebSocket upgrades refused for their Origin", registry=r
        )
        self.errors = Counter("tidings_errors", "Error frames sent, by code", ["code"], registry=r)
        self.fanout_seconds = Histogram(
            "tidings_fanout_seconds",
            "From an event's timestamp to its delivery to this node's subscriber queues",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
