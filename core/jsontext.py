"""Parsing JSON that came from outside: any input gives a value or `InvalidJson`, never a RecursionError.

`json.loads` recurses once per nesting level and raises RecursionError (not ValueError)
for `[[[[…` a few thousand deep, which a 64 KiB body easily holds. Everything the service
reads (a callback body, a token endpoint answer) is a flat object a few levels deep, so a
value nested deeper than `max_depth` is refused too: later steps that recurse (canonical
JSON for the replay digest) then never meet a depth the parser itself only just survived.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32  # a callback body is 1 level deep; Trackunit's answers 2


class InvalidJson(ValueError):
    """Not JSON, or nested more than the allowed depth (the message says which; it quotes no input)."""


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed value; InvalidJson if `data` is not JSON or nests deeper than `max_depth`."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson("not valid JSON") from None
    if _deeper_than(value, max_depth):
        raise InvalidJson("nested too deeply")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels; iterative, so it cannot recurse itself."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
