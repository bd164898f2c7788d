"""Prometheus metrics of one node (a registry per node, so tests can run several).

The counters on the hot path are plain integers, read by a collector at scrape time:
prometheus_client's own counters take a lock on every increment, which showed up in the
fan-out profile. The exposition format is prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
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
    """Counters by the values of one or more labels."""

    def __init__(self) -> None:
        self.children: dict[str, Count] = {}
        self.keyed: dict[tuple[str, ...], Count] = {}

    def labels(self, *values: str) -> Count:
        if len(values) == 1:
            child = self.children.get(values[0])
            if child is None:
                child = self.children[values[0]] = self.keyed[values] = Count()
            return child
        child = self.keyed.get(values)
        if child is None:
            child = self.keyed[values] = Count()
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


#: Seconds: from a few hundred microseconds (a local append) to a slow request.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Seconds to an agent's first token: models take from milliseconds to many seconds.
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Events per group commit.
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


class LabeledBuckets:
    """Histograms by the values of a fixed tuple of labels."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.children: dict[tuple[str, ...], Buckets] = {}

    def labels(self, *values: str) -> Buckets:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Buckets(self.bounds)
        return child


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
        #: WebSocket closes by close code (sent by us or received from the peer).
        self.closes = Labeled()
        self.fanout_seconds = Buckets(LATENCY_BUCKETS[:-1])
        #: HTTP requests by (route template, method, status).
        self.http_seconds = LabeledBuckets(LATENCY_BUCKETS)
        #: Agent replies: seconds to the first token, and how replies ended, by agent.
        self.agent_first_token_seconds = LabeledBuckets(FIRST_TOKEN_BUCKETS)
        self.agent_replies = Labeled()
        #: Store group commits: their duration and how many events each carried.
        self.commit_seconds = Buckets(LATENCY_BUCKETS)
        self.commit_batch = Buckets(BATCH_BUCKETS)
        #: Gauges read at scrape time (name → (help, read)), e.g. the agent queue depth.
        self.watched: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        # The standard series (process_*, python_gc_*, python_info) in the node's registry.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def watch(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Export `read()` as the gauge `tidings_<name>` at every scrape."""
        self.watched[name] = (doc, read)

    def observe_commit(self, events: int, seconds: float) -> None:
        """A store's group commit of `events` events took `seconds`."""
        self.commit_seconds.observe(seconds)
        self.commit_batch.observe(events)

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
#: Exported names where the attribute's name is not the series' (Prometheus puts the unit
#: last: `sent_bytes`, not `bytes_sent`).
_NAMES = {
    "duplicates": "duplicate_sends",
    "deliveries": "event_deliveries",
    "bytes_sent": "sent_bytes",
}


def _histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=buckets.cumulative(), sum_value=buckets.sum)


def _labeled_histogram(
    name: str, doc: str, labels: list[str], family: LabeledBuckets
) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(name, doc, labels=labels)
    for values, child in sorted(family.children.items()):
        metric.add_metric(list(values), buckets=child.cumulative(), sum_value=child.sum)
    return metric


def _labeled_counter(name: str, doc: str, labels: list[str], family: Labeled) -> Metric:
    metric = CounterMetricFamily(name, doc, labels=labels)
    for values, child in sorted(family.keyed.items()):
        metric.add_metric(list(values), child.value)
    return metric


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
        yield _labeled_counter("tidings_errors", "Error frames sent, by code", ["code"], m.errors)
        yield _labeled_counter(
            "tidings_store_write_failures",
            "Store writes that failed (or whose commit outcome was unknown), by cause",
            ["cause"],
            m.write_failures,
        )
        yield _labeled_counter(
            "tidings_websocket_closes",
            "WebSocket connections closed, by close code",
            ["code"],
            m.closes,
        )
        yield _labeled_counter(
            "tidings_agent_replies",
            "Assistant replies ended, by agent and outcome (completed, failed, timed_out, "
            "cancelled, interrupted)",
            ["agent", "outcome"],
            m.agent_replies,
        )
        yield _histogram(
            "tidings_fanout_seconds",
            "From an event's timestamp to its delivery to this node's subscriber queues",
            m.fanout_seconds,
        )
        yield _labeled_histogram(
            "tidings_http_request_duration_seconds",
            "HTTP requests, by route template, method and status",
            ["route", "method", "status"],
            m.http_seconds,
        )
        yield _labeled_histogram(
            "tidings_agent_first_token_seconds",
            "From a reply's start to its first token, by agent",
            ["agent"],
            m.agent_first_token_seconds,
        )
        yield _histogram(
            "tidings_store_commit_duration_seconds",
            "Store group commits: how long each took",
            m.commit_seconds,
        )
        yield _histogram(
            "tidings_store_commit_batch_events",
            "Store group commits: how many events each carried",
            m.commit_batch,
        )
        for name, (doc, read) in sorted(m.watched.items()):
            yield GaugeMetricFamily(f"tidings_{name}", doc, value=read())


class AgentMetrics:
    """The runner's `ReplyObserver`: reply timings and outcomes into the node's metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def first_token(self, agent: str, seconds: float) -> None:
        self.metrics.agent_first_token_seconds.labels(agent).observe(seconds)

    def ended(self, agent: str, outcome: str) -> None:
        self.metrics.agent_replies.labels(agent, outcome).inc()
