"""The AsyncAPI 3 document of `/v1/ws`, built from the frame structs themselves.

The document is derived, never written by hand: every request type the server parses
(`messages.REQUEST_TYPES`) and every frame it sends (the `Reply` structs and `Event`) is a
message whose payload schema msgspec generates from the struct, so the published contract
cannot drift from the implementation. Prose (what each frame means, ordering and resume
rules) lives in docs/protocol.md; this document is the machine-readable half.

AsyncAPI describes the application's side: the server *receives* requests and *sends*
replies, events and stream frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tidings.core.model import Event, Kind
from tidings.protocol import messages
from tidings.protocol.codes import CloseCode, ErrorCode

CHANNEL: Final = "ws"
_SCHEMAS: Final = "#/components/schemas/{name}"


def reply_types() -> list[type[msgspec.Struct]]:
    """Every frame the server sends: each `Reply` struct, then the `event` frame."""
    return [*messages.Reply.__subclasses__(), Event]


def _tag(cls: type[msgspec.Struct]) -> str:
    return str(cls.__struct_config__.tag)


def _message(cls: type[msgspec.Struct], summary: str) -> dict[str, Any]:
    return {
        "name": _tag(cls),
        "title": cls.__name__,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": _SCHEMAS.format(name=cls.__name__)},
    }


def _summary(cls: type[msgspec.Struct]) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc and not doc.startswith(cls.__name__ + "(") else ""


def document(version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of protocol v1 as served at `/asyncapi.json`."""
    requests = list(messages.REQUEST_TYPES.values())
    replies = reply_types()
    _, schemas = msgspec.json.schema_components([*requests, *replies], ref_template=_SCHEMAS)
    # The `kind` of an event is one of the documented kinds; unknown ones must be ignored.
    schemas["Event"]["properties"]["kind"]["examples"] = [str(kind) for kind in Kind]
    schemas["Error"]["properties"]["code"]["enum"] = [str(code) for code in ErrorCode]
    component_messages = {
        cls.__name__: _message(cls, _summary(cls) or f"`{_tag(cls)}` request") for cls in requests
    } | {cls.__name__: _message(cls, _summary(cls) or f"`{_tag(cls)}` frame") for cls in replies}
    channel_messages = {
        name: {"$ref": f"#/components/messages/{name}"} for name in component_messages
    }

    def operation(action: str, classes: Sequence[type[msgspec.Struct]]) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "messages": [
                {"$ref": f"#/channels/{CHANNEL}/messages/{cls.__name__}"} for cls in classes
            ],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tidings protocol v1",
            "version": version,
            "description": (
                "One WebSocket per client multiplexing many sessions. Every frame is UTF-8 "
                "JSON text: one object, or a JSON array of objects (a batch) in either "
                "direction. Requests carry an integer `id`; replies carry it back as `re`. "
                "The full rules are in docs/protocol.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:8765",
                "protocol": "ws",
                "pathname": "/v1/ws",
                "description": "`tidings serve` on its defaults; offer subprotocol tidings.v1.",
            }
        },
        "channels": {
            CHANNEL: {
                "address": "/v1/ws",
                "messages": channel_messages,
                "x-close-codes": {str(int(code)): code.name.lower() for code in CloseCode},
            }
        },
        "operations": {
            "receiveRequests": operation("receive", requests),
            "sendFrames": operation("send", replies),
        },
        "components": {"schemas": schemas, "messages": component_messages},
    }
