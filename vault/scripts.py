"""The Lua scripts (vault/lua/*.lua), each called through one wrapper with named keys and arguments.

A script's header names its keys and arguments (`-- KEYS: a, b` and `-- ARGV: c, ...rest`, where
`...rest` takes a list of any length at the end); the wrapper builds KEYS and ARGV in that order
from keyword arguments, so no call site counts positions. Every script is run after the layout's
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


def signature(text: str) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(key names, argument names, name of the trailing list or None) from a script's header."""
    found = {kind: [n.strip() for n in names.split(",") if n.strip()] for kind, names in _HEADER.findall(text)}
    if set(found) != {"KEYS", "ARGV"}:
        raise ValueError("a script names its KEYS and ARGV in its header")
    args, rest = found["ARGV"], None
    if args and args[-1].startswith("..."):
        rest = args.pop()[3:]
    names = [*found["KEYS"], *args, *([rest] if rest else [])]
    if len(set(names)) != len(names):
        raise ValueError("a script's key and argument names must differ")
    return tuple(found["KEYS"]), tuple(args), rest


class Script:
    """One Lua script of the package, registered with a client; call it with keyword arguments."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.name = name
        text = source(name)
        self.keys, self.args, self.rest = signature(text)
        self._names = frozenset({*self.keys, *self.args, *([self.rest] if self.rest else [])})
        self._script: RedisScript = client.register_script(lua_prelude() + source(LIBRARY) + text)

    def __call__(self, *, client: Any = None, **named: Any) -> Any:
        """Run it; `client` may be a pipeline. Every key and argument must be given, and nothing else."""
        if named.keys() != self._names:
            raise TypeError(f"script {self.name} takes {sorted(self._names)}, got {sorted(named)}")
        rest: Sequence[Any] = named[self.rest] if self.rest else ()
        return self._script(
            keys=[named[k] for k in self.keys], args=[*(named[a] for a in self.args), *rest], client=client
        )
