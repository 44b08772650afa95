"""proxy.paths.upstream_url: a caller's raw path can only ever become a URL below TRACKUNIT_API_URL."""

from urllib.parse import urlsplit

import pytest

from core.errors import InvalidPath
from proxy.paths import MAX_PATH, upstream_url

BASE = "https://iris.trackunit.com"
PREFIXED = "http://127.0.0.1:8080/gateway/v2"


def refused(raw_path: str, query: str = "", base: str = BASE) -> None:
    with pytest.raises(InvalidPath):
        upstream_url(base, raw_path, query)


def stays(url: str, base: str = BASE) -> None:
    got, wanted = urlsplit(url), urlsplit(base)
    assert (got.scheme, got.hostname, got.port, got.username) == (wanted.scheme, wanted.hostname, wanted.port, None)
    assert got.path.startswith(wanted.path.rstrip("/") + "/")


# Accepted --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("api/asset/v1/assets", f"{BASE}/api/asset/v1/assets"),
        ("api/asset/v1/assets/", f"{BASE}/api/asset/v1/assets/"),
        ("api/graphql/", f"{BASE}/api/graphql/"),
        ("api/asset/v1/assets/a%20b", f"{BASE}/api/asset/v1/assets/a%20b"),
        ("api/asset/v1/assets/a%2Fb", f"{BASE}/api/asset/v1/assets/a%2Fb"),
        ("api/asset/v1/assets/x~y_z-1.json", f"{BASE}/api/asset/v1/assets/x~y_z-1.json"),
        ("api/asset/v1/assets/a..b", f"{BASE}/api/asset/v1/assets/a..b"),
        ("api/asset/v1/assets/...", f"{BASE}/api/asset/v1/assets/..."),
        ("api/sites/v1/sites;matrix=1", f"{BASE}/api/sites/v1/sites;matrix=1"),
        ("evil.example.com/x", f"{BASE}/evil.example.com/x"),  # just a path segment on Trackunit's host
        ("api/x/:8080", f"{BASE}/api/x/:8080"),
    ],
)
def test_a_path_below_the_api_is_joined_unchanged(raw, expected):
    assert upstream_url(BASE, raw) == expected
    stays(expected)


def test_the_query_is_appended_as_sent():
    query = "page=2&size=50&q=a%20b&next=http://evil.example.com/@x&at=//evil"
    url = upstream_url(BASE, "api/asset/v1/assets", query)
    assert url == f"{BASE}/api/asset/v1/assets?{query}"
    stays(url)


def test_a_base_with_a_path_keeps_it():
    assert upstream_url(PREFIXED + "/", "api/x") == f"{PREFIXED}/api/x"
    stays(upstream_url(PREFIXED, "api/x"), PREFIXED)


# Refused: another host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "http://evil.example.com/x",
        "HTTPS://evil.example.com/x",
        "https:evil.example.com",
        "http:/evil.example.com",
        "ftp://evil.example.com",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "mailto:x",
        "http%3A%2F%2Fevil.example.com",
        "http%253A%252F%252Fevil.example.com",
    ],
)
def test_an_absolute_url_is_refused(raw):
    refused(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "//evil.example.com/x",
        "/evil.example.com/x",
        "///evil.example.com",
        "%2F%2Fevil.example.com",
        "%2fevil.example.com",
        "%252F%252Fevil.example.com",
        "%25252F%25252Fevil.example.com",
    ],
)
def test_a_scheme_relative_or_absolute_path_is_refused(raw):
    refused(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "user@evil.example.com",
        "api/x@evil.example.com",
        "%40evil.example.com",
        "api/%2540evil",
        "api/%252540evil",
    ],
)
def test_an_at_sign_is_refused_in_any_encoding(raw):
    refused(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "\\\\evil.example.com\\x",
        "api\\x",
        "%5Cevil",
        "%5c%5cevil.example.com",
        "api/%255c",
        "api/%25255C",
    ],
)
def test_a_backslash_is_refused_in_any_encoding(raw):
    refused(raw)


# Refused: dot segments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "..",
        ".",
        "../x",
        "./x",
        "api/..",
        "api/.",
        "api/../x",
        "api/./x",
        "api/asset/../../x",
        "api//../x",
        "%2e%2e",
        "%2E%2E/x",
        ".%2e/x",
        "%2e./x",
        "api/%2e/x",
        "api%2F..%2Fx",
        "api/..%2Fx",
        "%252e%252e/x",
        "%25252e%25252e/x",
        "api/%252E%252E",
        "api/..;/x",
        "api/.;x/x",
        "api/%2e%2e;jsessionid=1/x",
    ],
)
def test_a_dot_segment_is_refused_in_any_encoding(raw):
    refused(raw)
    refused(raw, base=PREFIXED)


def test_too_many_rounds_of_encoding_are_refused():
    refused("api/%2525252e%2525252e/x")  # four rounds to reach ".."
    refused("api/%25252525252541")  # even when the end result would be harmless


# Refused: characters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "api/\x00",
        "api/\r\nHost: evil",
        "api/\t",
        "api/\x7f",
        "api/%00",
        "api/%0d%0aHost:%20evil",
        "api/%0A",
        "api/%09",
        "api/%7F",
        "api/%2500",
        "api/%250d%250a",
    ],
)
def test_a_control_character_is_refused_raw_or_encoded(raw):
    refused(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "api/a b",
        "api/x#frag",
        "api/x?y",
        "api/\u00e9",
        "api/<x>",
        'api/"x"',
        "api/{x}",
        "api/|",
        "api/^",
        "api/`",
        "api/[::1]",
    ],
)
def test_a_character_outside_rfc_3986_is_refused(raw):
    refused(raw)


@pytest.mark.parametrize("raw", ["api/%ff", "api/%c0%ae%c0%ae/x", "api/%e2%82"])
def test_invalid_percent_encoded_utf8_is_refused(raw):
    refused(raw)


def test_an_empty_or_overlong_path_is_refused():
    refused("")
    refused("a" * (MAX_PATH + 1))
    assert upstream_url(BASE, "a" * MAX_PATH) == f"{BASE}/{'a' * MAX_PATH}"


@pytest.mark.parametrize("query", ["a=1#frag", "a=\r\nHost: evil", "a=\x00", "a=" + "x" * MAX_PATH])
def test_a_query_with_a_fragment_control_characters_or_too_long_is_refused(query):
    refused("api/asset/v1/assets", query)
