"""Error codes and WebSocket close codes of protocol v1 (PROTOCOL.md, "Errors and closing")."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


#: The HTTP status that carries each error code on the HTTP API.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    #: RFC 6455: a frame that breaks the framing rules.
    PROTOCOL_ERROR = 1002
    #: RFC 6455: a text message that is not UTF-8.
    INVALID_DATA = 1007
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    RATE_LIMITED = 4008
    SLOW_CONSUMER = 4009


class ProtocolError(Exception):
    """A request the server refuses with an `error` frame (or an HTTP error body).

    `re` is the request id when known; `extra` holds additional fields of the error frame
    (`retry_after_ms` for rate limits, `version` for conflicts, `session` for forbidden).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        re: int | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.re = re
        self.extra = extra or {}
