"""The Lua scripts (vault/lua/*.lua), each called through one wrapper with named keys and arguments.

A script's header names its keys and arguments (`-- KEYS: a, b` and `-- ARGV: c, ...rest`, where
`...rest` takes a list of any length at the end, of keys too); the wrapper builds KEYS and ARGV in
that order from keyword arguments, so no call site counts positions. Every script is run after the layout's
names (`vault.layout.lua_prelude`) and the lifecycle's shared steps (`lifecycle.lua`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script as RedisScript

from vault.layout import lua_prelude

_HEADER = re.compile(r"^-- (KEYS|ARGV): *(.*)$", re.M)
LIBRARY = "lifecycle"


@functools.cache
def source(name: str) -> str:
    """A script's own text, as shipped in the package."""
    return resources.files("vault").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _split_rest(names: list[str]) -> tuple[tuple[str, ...], str | None]:
    if names and names[-1].startswith("..."):
        return tuple(names[:-1]), names[-1][3:]
    return tuple(names), None


def signature(text: str) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(key names, argument names, name of the trailing argument list or None) from a script's header."""
    keys, key_rest, args, rest = full_signature(text)
    if key_rest is not None:
        raise ValueError("this script ends its KEYS with a list: read it with full_signature")
    return keys, args, rest


def full_signature(text: str) -> tuple[tuple[str, ...], str | None, tuple[str, ...], str | None]:
    """(key names, trailing key list or None, argument names, trailing argument list or None)."""
    found = {kind: [n.strip() for n in names.split(",") if n.strip()] for kind, names in _HEADER.findall(text)}
    if set(found) != {"KEYS", "ARGV"}:
        raise ValueError("a script names its KEYS and ARGV in its header")
    (keys, key_rest), (args, rest) = _split_rest(found["KEYS"]), _split_rest(found["ARGV"])
    names = [*keys, *([key_rest] if key_rest else []), *args, *([rest] if rest else [])]
    if len(set(names)) != len(names):
        raise ValueError("a script's key and argument names must differ")
    return keys, key_rest, args, rest


class Script:
    """One Lua script of the package, registered with a client; call it with keyword arguments."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.name = name
        text = source(name)
        self.keys, self.key_rest, self.args, self.rest = full_signature(text)
        lists = [name for name in (self.key_rest, self.rest) if name]
        self._names = frozenset({*self.keys, *self.args, *lists})
        self._script: RedisScript = client.register_script(lua_prelude() + source(LIBRARY) + text)

    def __call__(self, *, client: Any = None, **named: Any) -> Any:
        """Run it; `client` may be a pipeline. Every key and argument must be given, and nothing else."""
        if named.keys() != self._names:
            raise TypeError(f"script {self.name} takes {sorted(self._names)}, got {sorted(named)}")
        key_rest: Sequence[Any] = named[self.key_rest] if self.key_rest else ()
        rest: Sequence[Any] = named[self.rest] if self.rest else ()
        return self._script(
            keys=[*(named[k] for k in self.keys), *key_rest],
            args=[*(named[a] for a in self.args), *rest],
            client=client,
        )
