"""The value limits every request's free-form JSON meets, over WebSocket and HTTP alike.

A `send`'s `data` (and any other free-form JSON a request carries) may be any JSON, so
the typed conversion cannot bound it. One walk, here, checks what the store and every
client can hold: nesting depth, integers in the signed 64-bit range (what SQLite,
PostgreSQL's bigint and JavaScript's BigInt-free clients agree on; a 4,000-digit
integer is also CPU for whoever formats it), finite numbers, and text that is valid
Unicode (a lone surrogate, legal in a JSON escape, cannot be stored as UTF-8). The
WebSocket parser (`protocol.messages.parse_object`) and the HTTP routes
(`server.http`) both call `check_value`, so both refuse the same input with the same
`bad_request` text.
"""

from __future__ import annotations

import math
from typing import Any, Final

from tidings.protocol.codes import ErrorCode, ProtocolError

#: How deeply free-form `data` may nest (objects and arrays).
MAX_DATA_DEPTH: Final = 16
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1


def _bad(message: str, re: int | None) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message, re=re)


def check_text(name: str, value: str, *, re: int | None = None) -> None:
    """Refuse a string with a lone surrogate (not encodable as UTF-8)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _bad(f"`{name}` holds a lone surrogate (not valid Unicode)", re) from None


def check_value(
    value: Any, name: str = "data", *, re: int | None = None, limit: int = MAX_DATA_DEPTH
) -> None:
    """Raise `bad_request` if `value` nests deeper than `limit`, holds an integer
    outside the signed 64-bit range, a non-finite number or a lone surrogate."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(name, item, re=re)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise _bad(f"`{name}` holds an integer outside the 64-bit range", re)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _bad(f"`{name}` holds a number that is not finite", re)
        elif isinstance(item, dict):
            if depth >= limit:
                raise _bad(f"`{name}` nests deeper than {limit} levels", re)
            for key, v in item.items():
                if isinstance(key, str):
                    check_text(name, key, re=re)
                stack.append((v, depth + 1))
        elif isinstance(item, list | tuple):
            if depth >= limit:
                raise _bad(f"`{name}` nests deeper than {limit} levels", re)
            stack.extend((v, depth + 1) for v in item)
