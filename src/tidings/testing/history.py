"""A history checker: record what clients did and saw, then find where Tidings broke a promise.

The core is pure: feed it records, read its anomalies. Nothing here talks to a server, so
the same checker serves the project's fault suite, `tidings probe` and users' own tests.

What is recorded:

* **operations** — each send attempt: `invoke`, then one of `ok` (the ack, with its seq and
  `duplicate` flag), `fail` (an error answer: the protocol says *not stored*) or `unknown`
  (no answer: the connection dropped, the request timed out). One logical operation is one
  `(session, author, client_id)`; a retry is another attempt with the same key.
* **views** — the events an observer was delivered, per session, in arrival order, and the
  session's stored log read at the end (`log`). A view declares where it starts (`start`:
  the `after` of a subscribe), so a resume at a later point is a declared skip, not a gap.

What is checked (`check()`):

* `lost` — an acked operation absent from a stored log, or a view holding another event at
  the acked seq;
* `failed_appears` — an operation whose every answer was an error shows up in a view, or is
  later acked as a duplicate of itself (so the "failed" attempt was stored);
* `duplicate` — one key at two seqs in a view, one seq delivered twice to an observer, or one
  key acked at two different seqs;
* `gap` — a view skipping seqs it did not declare skipped (a log must be gap-free from its
  first seq);
* `reorder` — a view going back to a lower seq;
* `disagree` — two views holding different events at the same seq of a session.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

LOG = "<log>"
"""The observer name of a session's stored log (`History.log`)."""


class Outcome(enum.Enum):
    PENDING = "pending"
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


class Kind(enum.Enum):
    LOST = "lost"
    FAILED_APPEARS = "failed_appears"
    DUPLICATE = "duplicate"
    GAP = "gap"
    REORDER = "reorder"
    DISAGREE = "disagree"


Key = tuple[str, str, str]
"""One logical write: (session, author, client_id)."""


@dataclasses.dataclass(frozen=True)
class Anomaly:
    kind: Kind
    session: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value} in {self.session}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class Identity:
    """What makes two events at one seq the same event."""

    kind: str
    author: str | None
    client_id: str | None
    fingerprint: str | None = None

    def key(self, session: str) -> Key | None:
        if self.author is None or self.client_id is None:
            return None
        return (session, self.author, self.client_id)


def fingerprint(data: Any) -> str:
    """A short digest of an event's `data` (canonical JSON), to compare views exactly."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def identity_of(frame: Mapping[str, Any]) -> Identity:
    """The identity of an `event` frame (or an HTTP event object)."""
    return Identity(
        kind=str(frame["kind"]),
        author=frame.get("author"),
        client_id=frame.get("client_id"),
        fingerprint=fingerprint(frame.get("data")),
    )


@dataclasses.dataclass
class Attempt:
    outcome: Outcome = Outcome.PENDING
    seq: int | None = None
    duplicate: bool = False
    code: str | None = None


@dataclasses.dataclass
class Operation:
    key: Key
    attempts: list[Attempt] = dataclasses.field(default_factory=list)

    @property
    def acked(self) -> bool:
        return any(a.outcome is Outcome.OK for a in self.attempts)

    @property
    def failed(self) -> bool:
        """Every attempt answered with an error: the server said *not stored*, each time."""
        return bool(self.attempts) and all(a.outcome is Outcome.FAIL for a in self.attempts)

    @property
    def unknown(self) -> bool:
        """No ack, and at least one attempt the server never answered."""
        return not self.acked and any(
            a.outcome in (Outcome.UNKNOWN, Outcome.PENDING) for a in self.attempts
        )


@dataclasses.dataclass
class View:
    """What one observer (or the stored log) holds of one session, in arrival order."""

    observer: str
    session: str
    deliveries: list[tuple[int, Identity]] = dataclasses.field(default_factory=list)
    anomalies: list[Anomaly] = dataclasses.field(default_factory=list)
    _last: int | None = None
    _next_start: int | None = None

    def start(self, after: int) -> None:
        self._next_start = after

    def deliver(self, seq: int, identity: Identity) -> None:
        where = f"{self.observer} got seq {seq}"
        if self._next_start is not None:
            expected_from = self._next_start
            self._next_start = None
            if self._last is not None and expected_from < self._last:
                # A resume from before what it already holds: the redelivered seqs would be
                # duplicates, so the view keeps checking against its last seq.
                expected_from = self._last
        else:
            expected_from = self._last if self._last is not None else seq - 1
        seen = {s for s, _ in self.deliveries}
        if seq in seen:
            self.anomalies.append(Anomaly(Kind.DUPLICATE, self.session, f"{where} twice"))
        elif self._last is not None and seq < self._last:
            self.anomalies.append(
                Anomaly(Kind.REORDER, self.session, f"{where} after seq {self._last}")
            )
        elif seq > expected_from + 1:
            missing = f"{expected_from + 1}..{seq - 1}"
            self.anomalies.append(Anomaly(Kind.GAP, self.session, f"{where}, missing {missing}"))
        self.deliveries.append((seq, identity))
        self._last = seq if self._last is None else max(self._last, seq)

    def by_seq(self) -> dict[int, Identity]:
        return dict(self.deliveries)


@dataclasses.dataclass
class Counts:
    sends: int = 0  # logical operations (distinct keys)
    attempts: int = 0
    acked: int = 0
    duplicates: int = 0  # acks with duplicate: true
    failed: int = 0
    unknown: int = 0  # never acked, and at least one attempt unanswered
    retried: int = 0  # operations with more than one attempt
    delivered: int = 0  # events delivered to observers (the stored log not included)
    stored: int = 0  # events in the stored logs read
    observers: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            **{
                f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in dataclasses.fields(self)
            }
        )

    def __str__(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))


class History:
    """The record of one run; `check()` lists its anomalies, `counts()` sums it up."""

    def __init__(self) -> None:
        self.operations: dict[Key, Operation] = {}
        self.views: dict[tuple[str, str], View] = {}
        self._open: dict[Key, list[Attempt]] = defaultdict(list)

    # ------------------------------------------------------------ operations

    def invoke(self, session: str, author: str, client_id: str) -> Key:
        """A send attempt begins (a retry is another `invoke` with the same key)."""
        key = (session, author, client_id)
        operation = self.operations.setdefault(key, Operation(key))
        attempt = Attempt()
        operation.attempts.append(attempt)
        self._open[key].append(attempt)
        return key

    def _answer(self, key: Key) -> Attempt:
        pending = self._open.get(key)
        if not pending:
            raise ValueError(f"no attempt of {key} is waiting for an answer")
        return pending.pop(0)

    def ok(self, key: Key, seq: int, *, duplicate: bool = False) -> None:
        attempt = self._answer(key)
        attempt.outcome, attempt.seq, attempt.duplicate = Outcome.OK, seq, duplicate

    def fail(self, key: Key, code: str) -> None:
        attempt = self._answer(key)
        attempt.outcome, attempt.code = Outcome.FAIL, code

    def unknown(self, key: Key) -> None:
        self._answer(key).outcome = Outcome.UNKNOWN

    # ------------------------------------------------------------ views

    def view(self, observer: str, session: str) -> View:
        return self.views.setdefault((observer, session), View(observer, session))

    def start(self, observer: str, session: str, after: int) -> None:
        """The observer (re)subscribes from `after`: its next event should be `after + 1`."""
        self.view(observer, session).start(after)

    def deliver(self, observer: str, session: str, seq: int, identity: Identity) -> None:
        self.view(observer, session).deliver(seq, identity)

    def deliver_frame(self, observer: str, frame: Mapping[str, Any]) -> None:
        """An `event` frame the observer received."""
        self.deliver(observer, str(frame["session"]), int(frame["seq"]), identity_of(frame))

    def log(self, session: str, events: Iterable[Mapping[str, Any]]) -> None:
        """The session's stored log, read after the run (whole, or from a known seq)."""
        view = View(LOG, session)
        self.views[(LOG, session)] = view
        for event in events:
            view.deliver(int(event["seq"]), identity_of(event))

    # ------------------------------------------------------------ verdict

    def check(self) -> list[Anomaly]:
        anomalies: list[Anomaly] = []
        for view in self.views.values():
            anomalies.extend(view.anomalies)
            anomalies.extend(self._same_key_twice(view))
        anomalies.extend(self._disagreements())
        for operation in self.operations.values():
            anomalies.extend(self._check_operation(operation))
        return anomalies

    def _same_key_twice(self, view: View) -> list[Anomaly]:
        where: dict[Key, int] = {}
        out: list[Anomaly] = []
        for seq, identity in view.deliveries:
            key = identity.key(view.session)
            if key is None:
                continue
            first = where.setdefault(key, seq)
            if first != seq:
                out.append(
                    Anomaly(
                        Kind.DUPLICATE,
                        view.session,
                        f"{view.observer} holds client id {key[2]!r} of {key[1]!r} "
                        f"at seq {first} and {seq}",
                    )
                )
        return out

    def _disagreements(self) -> list[Anomaly]:
        out: list[Anomaly] = []
        reference: dict[tuple[str, int], tuple[str, Identity]] = {}
        for view in self.views.values():
            for seq, identity in view.deliveries:
                seen = reference.setdefault((view.session, seq), (view.observer, identity))
                if seen[1] != identity:
                    out.append(
                        Anomaly(
                            Kind.DISAGREE,
                            view.session,
                            f"seq {seq}: {seen[0]} has {seen[1]}, {view.observer} has {identity}",
                        )
                    )
        return out

    def _views_of(self, session: str) -> list[View]:
        return [v for (_, s), v in self.views.items() if s == session]

    def _check_operation(self, operation: Operation) -> list[Anomaly]:
        session, author, client_id = operation.key
        name = f"{author!r}'s {client_id!r}"
        out: list[Anomaly] = []
        acked_seqs = sorted(
            {a.seq for a in operation.attempts if a.outcome is Outcome.OK and a.seq is not None}
        )
        if len(acked_seqs) > 1:
            out.append(Anomaly(Kind.DUPLICATE, session, f"{name} acked at seqs {acked_seqs}"))
        # A duplicate ack whose earlier attempts were all refused: a refused one was stored.
        for n, attempt in enumerate(operation.attempts):
            if attempt.outcome is Outcome.OK and attempt.duplicate:
                before = operation.attempts[:n]
                if before and all(a.outcome is Outcome.FAIL for a in before):
                    codes = ", ".join(str(a.code) for a in before)
                    out.append(
                        Anomaly(
                            Kind.FAILED_APPEARS,
                            session,
                            f"{name} was refused ({codes}) and then acked as a duplicate",
                        )
                    )
                break
        views = self._views_of(session)
        if operation.failed:
            for view in views:
                seqs = [s for s, i in view.deliveries if i.key(session) == operation.key]
                if seqs:
                    codes = ", ".join(str(a.code) for a in operation.attempts)
                    out.append(
                        Anomaly(
                            Kind.FAILED_APPEARS,
                            session,
                            f"{name} was refused ({codes}) but {view.observer} has it at seq "
                            f"{seqs[0]}",
                        )
                    )
        for seq in acked_seqs:
            for view in views:
                held = view.by_seq().get(seq)
                if held is not None and held.key(session) != operation.key:
                    out.append(
                        Anomaly(
                            Kind.LOST,
                            session,
                            f"{name} acked at seq {seq} but {view.observer} has {held} there",
                        )
                    )
            log = self.views.get((LOG, session))
            if log is not None and not any(
                i.key(session) == operation.key for _, i in log.deliveries
            ):
                first = log.deliveries[0][0] if log.deliveries else None
                if first is None or seq >= first:  # a log read from a later seq cannot tell
                    out.append(
                        Anomaly(Kind.LOST, session, f"{name} acked at seq {seq}, not in the log")
                    )
        return out

    def counts(self) -> Counts:
        counts = Counts()
        for operation in self.operations.values():
            counts.sends += 1
            counts.attempts += len(operation.attempts)
            counts.acked += operation.acked
            counts.failed += operation.failed
            counts.unknown += operation.unknown
            counts.retried += len(operation.attempts) > 1
            counts.duplicates += sum(
                a.outcome is Outcome.OK and a.duplicate for a in operation.attempts
            )
        for (observer, _), view in self.views.items():
            if observer == LOG:
                counts.stored += len(view.deliveries)
            else:
                counts.observers += 1
                counts.delivered += len(view.deliveries)
        return counts

    def assert_valid(self) -> Counts:
        """Raise `AssertionError` listing every anomaly; the counts when there is none."""
        anomalies = self.check()
        if anomalies:
            shown = "\n  ".join(str(a) for a in anomalies[:50])
            more = f"\n  ... and {len(anomalies) - 50} more" if len(anomalies) > 50 else ""
            raise AssertionError(f"{len(anomalies)} anomalies ({self.counts()}):\n  {shown}{more}")
        return self.counts()
