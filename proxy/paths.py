"""Turning a caller's path into an upstream URL that can only ever be on TRACKUNIT_API_URL.

The raw path (as sent, still percent-encoded) is checked, then checked again
after decoding up to three times, so that encoded `..`, backslashes, `@`,
control characters and scheme-relative `//host` forms are all refused. The
joined URL must have the base's scheme, host and port, or it is refused too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from core.errors import InvalidPath

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ALLOWED_RAW = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:%/]*$")  # RFC 3986 pchar and '/', no '@'
MAX_PATH = 2048
MAX_DECODE_ROUNDS = 3


def upstream_url(base: str, raw_path: str, raw_query: str = "") -> str:
    """`base` + "/" + `raw_path` (+ "?" + query), or InvalidPath."""
    check_path(raw_path)
    url = base.rstrip("/") + "/" + raw_path
    if raw_query:
        if _CONTROL.search(raw_query) or "#" in raw_query or len(raw_query) > MAX_PATH:
            raise InvalidPath("The query string contains characters that are not allowed.")
        url += "?" + raw_query
    wanted, got = urlsplit(base), urlsplit(url)
    if (got.scheme, got.hostname, got.port, got.username, got.password) != (
        wanted.scheme,
        wanted.hostname,
        wanted.port,
        None,
        None,
    ) or not got.path.startswith(wanted.path.rstrip("/") + "/"):
        raise InvalidPath("The path would leave Trackunit's API.")
    return url


def check_path(raw_path: str) -> None:
    if not raw_path or len(raw_path) > MAX_PATH:
        raise InvalidPath("A path below the API is required (at most 2048 characters).")
    if not _ALLOWED_RAW.match(raw_path):
        raise InvalidPath("The path contains characters that are not allowed (e.g. '@', '\\', spaces).")
    text = raw_path
    for _ in range(MAX_DECODE_ROUNDS + 1):
        _check_decoded(text)
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise InvalidPath("The path is not valid percent-encoded UTF-8.") from None
        if decoded == text:
            return
        text = decoded
    raise InvalidPath("The path is encoded too many times.")


def _check_decoded(text: str) -> None:
    if text.startswith("/") or text.startswith("\\"):
        raise InvalidPath("The path must be relative to the API (no '//host' or absolute paths).")
    if _CONTROL.search(text) or "\\" in text or "@" in text:
        raise InvalidPath("The path contains characters that are not allowed (e.g. '@', '\\', controls).")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
        raise InvalidPath("The path must not be an absolute URL.")
    # "..;x" too: servlet containers drop ';' path parameters and then see "..".
    if any(segment.split(";", 1)[0] in (".", "..") for segment in text.split("/")):
        raise InvalidPath("The path must not contain '.' or '..' segments.")
