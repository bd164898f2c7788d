"""Errors the SDK raises."""

from __future__ import annotations


class TidingsError(Exception):
    """A request refused by the server, or the client unable to go on.

    `code` is the protocol's error code (`forbidden`, `not_found`, `unauthorized`, …) or
    `closed` when the client was closed, `connection` when the link went away.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        close_code: int | None = None,
        retry_after_ms: int | None = None,
        version: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code
        #: For `rate_limited`: how long to wait. For `conflict`: the session's version.
        self.retry_after_ms = retry_after_ms
        self.version = version

    @classmethod
    def from_frame(cls, frame: dict[str, object]) -> TidingsError:
        """The error an `error` frame (or HTTP error body) describes."""
        retry = frame.get("retry_after_ms")
        version = frame.get("version")
        return cls(
            str(frame.get("code", "internal")),
            str(frame.get("message", "")),
            retry_after_ms=retry if isinstance(retry, int) else None,
            version=version if isinstance(version, int) else None,
        )


class AuthError(TidingsError):
    """The server refused the token (close code 4001) or access (4003): retrying will not
    help, so the client stops and surfaces this."""


class ConnectError(TidingsError):
    """`connect()` could not reach the server: neither its WebSocket nor (in fallback) its
    HTTP API answered within `connect_timeout_s`. `attempts` connection attempts failed;
    `last` is the last failure (also the exception's `__cause__`)."""

    def __init__(self, url: str, *, waited_s: float, attempts: int, last: BaseException | None):
        detail = f"; the last failure: {last!r}" if last is not None else ""
        super().__init__(
            "unreachable",
            f"cannot reach the Tidings server at {url}: {attempts} connection attempt(s) failed"
            f" in {waited_s:.1f} s{detail}. Is the server running, and is the URL right?",
        )
        self.url = url
        self.attempts = attempts
        self.last = last


class OfflineQueueFull(TidingsError):
    """Too many sends are waiting for the server; wait for some to be confirmed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "queue_full",
            f"{limit} sends are already waiting for the server (the offline queue's bound); "
            "await some handles before sending more, or raise `max_queue`",
        )
        self.limit = limit


class SendFailed(TidingsError):
    """A send the server refused (`await handle` raises it)."""
