"""Every frame of protocol v1 as a typed struct, with parsing and serialization.

Parsing is two-step on purpose: the JSON text is decoded to plain values first, so that a
request whose fields are wrong can still be answered with an `error` carrying its `id` as
`re`; then each object is converted to its struct, and msgspec's message says exactly
which field is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from tidings.protocol import validation
from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.protocol.validation import check_value

#: Nesting allowed inside a request's `data` (metadata, changes). Deeper is `bad_request`.
MAX_DATA_DEPTH: Final = validation.MAX_DATA_DEPTH

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
#: The largest seq a store can hold (a signed 64-bit integer): `after`/`before` beyond it
#: are `bad_request`, never an overflow deep in a store.
MAX_SEQ: Final = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]


# ---------------------------------------------------------------- client → server


class Request(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every request a client sends."""


class Connect(Request, tag="connect"):
    id: RequestId
    token: str | None = None
    client: str | None = None


class Refresh(Request, tag="refresh"):
    id: RequestId
    token: str


class Subscribe(Request, tag="subscribe"):
    id: RequestId
    session: Id
    after: Seq | None = None


class Unsubscribe(Request, tag="unsubscribe"):
    id: RequestId
    session: Id


class Send(Request, tag="send"):
    id: RequestId
    session: Id
    client_id: Id
    kind: Name
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Signal(Request, tag="signal"):
    session: Id
    name: Name
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    id: RequestId | None = None


class Cancel(Request, tag="cancel"):
    id: RequestId
    session: Id
    message_id: Id


class Ping(Request, tag="ping"):
    id: RequestId


REQUEST_TYPES: Final[dict[str, type[Request]]] = {
    "connect": Connect,
    "refresh": Refresh,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "send": Send,
    "signal": Signal,
    "cancel": Cancel,
    "ping": Ping,
}


_json_decoder: Final = msgspec.json.Decoder()


def parse_object(obj: Any) -> Request:
    """Convert one decoded JSON value to its request struct, or raise `ProtocolError`."""
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a frame must hold a JSON object or array")
    raw_id = obj.get("id")
    re = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing field `type`", re=re)
    cls = REQUEST_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown type {kind[:40]!r}", re=re)
    data = obj.get("data")
    if data is not None:
        # The limits HTTP bodies meet too (one layer: protocol/validation.py).
        check_value(data, "data", re=re)
    try:
        return msgspec.convert(obj, cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc), re=re) from None


#: Requests one batch may hold by default (`TIDINGS_MAX_BATCH`).
MAX_BATCH: Final = 100

_batch_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])


class InvalidText(ValueError):
    """A text frame that is not UTF-8: not a bad request but a broken frame (close 1007)."""


def split_frame(frame: bytes, max_batch: int = MAX_BATCH) -> list[Any]:
    """The requests of one text frame, not yet converted: one decoded JSON value for a
    single object, or one `msgspec.Raw` per item of a batch (converted by `parse_item`
    when its turn comes, so that a frame refused early costs no more than a scan).

    Raises `ProtocolError` for the whole frame (malformed, empty, more than `max_batch`
    items: one error, however many items) and `InvalidText` when it is not UTF-8.
    """
    try:
        if frame.lstrip()[:1] == b"[":
            items: list[Any] = _batch_decoder.decode(frame)
        else:
            return [_json_decoder.decode(frame)]
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # Only on this error path: msgspec checks UTF-8 inside strings and any non-ASCII
        # byte outside one is malformed JSON, so valid frames never pay for the check.
        try:
            frame.decode()
        except UnicodeDecodeError:
            raise InvalidText("invalid UTF-8 in a text frame") from None
        raise ProtocolError(ErrorCode.BAD_REQUEST, "malformed JSON or nested too deeply") from None
    if not items:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "empty batch")
    if len(items) > max_batch:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"a batch holds at most {max_batch} requests, this one {len(items)}; "
            "none of them was handled",
        )
    return items


def parse_item(item: Any) -> Request:
    """One item of `split_frame` as its request struct, or raise `ProtocolError`."""
    if isinstance(item, msgspec.Raw):
        try:
            item = _json_decoder.decode(item)
        except (msgspec.DecodeError, RecursionError):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "nested too deeply") from None
    return parse_object(item)


def parse_frame(frame: str | bytes, max_batch: int = MAX_BATCH) -> list[Request | ProtocolError]:
    """Parse one text frame: a single request or a JSON array of them (a batch).

    Never raises: each object becomes its struct or the `ProtocolError` to answer it with,
    so one bad request in a batch does not spoil the others (a frame that is itself
    wrong becomes one error). The server converts items one by one instead, each in its
    turn (`split_frame`, `parse_item`); this is the whole frame at once.
    """
    data = frame.encode(errors="surrogatepass") if isinstance(frame, str) else frame
    try:
        items = split_frame(data, max_batch)
    except ProtocolError as err:
        return [err]
    except InvalidText as exc:
        return [ProtocolError(ErrorCode.BAD_REQUEST, str(exc))]
    out: list[Request | ProtocolError] = []
    for item in items:
        try:
            out.append(parse_item(item))
        except ProtocolError as err:
            out.append(err)
    return out


# ---------------------------------------------------------------- server → client


class Reply(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of every frame the server sends."""


class Connected(Reply, tag="connected"):
    re: int
    user: str
    conn: str
    heartbeat_ms: int
    server_time: int
    protocol: int


class Ok(Reply, tag="ok"):
    re: int


class Subscribed(Reply, tag="subscribed"):
    re: int
    session: str
    seq: int
    # `snapshot` is always present (null when resuming), so it is encoded explicitly.
    snapshot: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    recovered: bool | None = None


class Ack(Reply, tag="ack"):
    re: int | None
    session: str
    client_id: str
    seq: int
    event_id: str
    duplicate: bool


class Pong(Reply, tag="pong"):
    re: int
    server_time: int


class Error(Reply, tag="error"):
    code: str
    message: str
    re: int | None = None
    session: str | None = None
    retry_after_ms: int | None = None
    version: int | None = None


class Presence(Reply, tag="presence"):
    session: str
    online: list[str]


class SignalOut(Reply, tag="signal"):
    session: str
    name: str
    data: dict[str, Any]
    # `from` is a Python keyword, so the field has another name in Python.
    sender: str = msgspec.field(name="from")


class Stream(Reply, tag="stream"):
    session: str
    message_id: str
    offset: int
    text: str


_encoder: Final = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """Serialize one frame (a struct, or JSON-ready values) to JSON, UTF-8 bytes: what
    goes on the wire, encoded once however many receive it."""
    return _encoder.encode(value)


def error_from(err: ProtocolError) -> Error:
    """The `error` frame that answers a `ProtocolError`."""
    extra = err.extra
    session = extra.get("session")
    retry = extra.get("retry_after_ms")
    version = extra.get("version")
    return Error(
        code=str(err.code),
        message=err.message,
        re=err.re,
        session=session if isinstance(session, str) else None,
        retry_after_ms=retry if isinstance(retry, int) else None,
        version=version if isinstance(version, int) else None,
    )


STREAM_PREFIX: Final = b'{"type":"stream",'
_stream_decoder: Final = msgspec.json.Decoder(Stream)


def merge_streams(first: bytes, second: bytes) -> bytes | None:
    """One `stream` frame carrying both chunks, when `second` continues `first` exactly
    (same message, offset right after the first's text); else None.

    Used on a backlogged connection so that its queue grows by text, not by frames."""
    if not (first.startswith(STREAM_PREFIX) and second.startswith(STREAM_PREFIX)):
        return None
    a = _stream_decoder.decode(first)
    b = _stream_decoder.decode(second)
    if (a.session, a.message_id) != (b.session, b.message_id):
        return None
    if a.offset + len(a.text) != b.offset:
        return None
    return encode(
        Stream(session=a.session, message_id=a.message_id, offset=a.offset, text=a.text + b.text)
    )


def batch(frames: list[bytes]) -> bytes:
    """Join already-encoded frames into one frame: a JSON array (or the frame itself)."""
    if len(frames) == 1:
        return frames[0]
    return b"[" + b",".join(frames) + b"]"
