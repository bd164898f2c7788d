"""Prometheus metrics of one node (a registry per node, so tests can run several).

The counters on the hot path are plain integers, read by a collector at scrape time:
prometheus_client's own counters take a lock on every increment, which showed up in the
fan-out profile. The exposition format is prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class Count:
    """A counter (or, with `dec`, a gauge) that is one integer."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class Labeled:
    """Counters by one label's value."""

    def __init__(self) -> None:
        self.children: dict[str, Count] = {}

    def labels(self, value: str) -> Count:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = Count()
        return child


class Buckets:
    """A histogram: cumulative buckets are computed at scrape time."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class Metrics:
    def __init__(self) -> None:
        self.connections = Count()
        self.subscriptions = Count()
        self.events_appended = Count()
        self.duplicates = Count()
        self.frames_sent = Count()
        self.bytes_sent = Count()
        self.deliveries = Count()
        self.rate_limited = Count()
        self.slow_consumer_closes = Count()
        self.origin_refused = Count()
        self.errors = Labeled()
        #: Failed writes by cause (`StoreUnavailable.cause`; uncertain commits included).
        self.write_failures = Labeled()
        self.fanout_seconds = Buckets(
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
        )
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


_GAUGES = {
    "connections": "Open WebSocket connections",
    "subscriptions": "Session subscriptions on open connections",
}
_COUNTERS = {
    "events_appended": "Events appended to session logs",
    "duplicates": "Sends answered with an existing event (duplicate client id)",
    "frames_sent": "WebSocket frames written (a batch counts once)",
    "bytes_sent": "WebSocket bytes written",
    "deliveries": "Events queued to subscribers",
    "rate_limited": "Requests refused with rate_limited",
    "slow_consumer_closes": "Connections closed with 4009",
    "origin_refused": "WebSocket upgrades refused for their Origin",
}
_NAMES = {"duplicates": "duplicate_sends", "deliveries": "event_deliveries"}


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for attr, doc in _GAUGES.items():
            count: Count = getattr(m, attr)
            yield GaugeMetricFamily(f"tidings_{attr}", doc, value=count.value)
        for attr, doc in _COUNTERS.items():
            count = getattr(m, attr)
            yield CounterMetricFamily(f"tidings_{_NAMES.get(attr, attr)}", doc, value=count.value)
        errors = CounterMetricFamily(
            "tidings_errors", "Error frames sent, by code", labels=["code"]
        )
        for code, child in sorted(m.errors.children.items()):
            errors.add_metric([code], child.value)
        yield errors
        failures = CounterMetricFamily(
            "tidings_store_write_failures",
            "Store writes that failed (or whose commit outcome was unknown), by cause",
            labels=["cause"],
        )
        for cause, child in sorted(m.write_failures.children.items()):
            failures.add_metric([cause], child.value)
        yield failures
        fanout = m.fanout_seconds
        yield HistogramMetricFamily(
            "tidings_fanout_seconds",
            "From an event's timestamp to its delivery to this node's subscriber queues",
            buckets=fanout.cumulative(),
            sum_value=fanout.sum,
        )
