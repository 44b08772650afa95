"""api/openapi.json: a valid OpenAPI 3.1 document that describes exactly the routes the app serves.

Both ways: every Flask route (and method) is in the document, and every documented path and method is a
route. Every error the service defines (core/errors.py) is documented with its status and code, and GET
/openapi.json serves the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema_rs
import schemathesis
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from core import errors

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "api" / "openapi.json"
DOCUMENT = json.loads(DOCUMENT_PATH.read_text())
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Flask adds these to every route on its own (HEAD to GET routes); they are not operations of the API.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item if method in HTTP_METHODS
    }


def served_operations(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every rule: `<converter:name>` and `<name>` become `{name}`."""
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {(method, path) for method in rule.methods - IMPLICIT_METHODS}
    return served


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        target = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def documented_error_codes() -> set[tuple[int, str]]:
    """(status, code) of every documented error response, from its `error.code` enum."""
    found = set()

    def codes_in(schema) -> list[str]:
        schema = resolve(schema)
        if not isinstance(schema, dict):
            return []
        codes = schema.get("properties", {}).get("error", {}).get("properties", {}).get("code", {}).get("enum", [])
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, []):
                codes = [*codes, *codes_in(sub)]
        return list(codes)

    for item in DOCUMENT["paths"].values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for status, response in operation["responses"].items():
                for media in resolve(response).get("content", {}).values():
                    found |= {(int(status), code) for code in codes_in(media.get("schema", {}))}
    return found


def test_document_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"].startswith("3.1.")
    OPENAPI_31_VALIDATOR.validate(DOCUMENT)  # the OAS 3.1 meta-schema (as schemathesis ships it)


def test_every_schema_in_the_document_is_valid_json_schema_2020_12():
    def schemas(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "schema" or key == "schemas":
                    yield from (value.values() if key == "schemas" else [value])
                yield from schemas(value)
        elif isinstance(node, list):
            for value in node:
                yield from schemas(value)

    checked = list(schemas(DOCUMENT))
    assert len(checked) > 30
    for schema in checked:
        assert jsonschema_rs.meta.is_valid(schema), schema


def test_every_ref_resolves():
    refs = re.findall(r'"\$ref":\s*"([^"]+)"', DOCUMENT_PATH.read_text())
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        assert resolve({"$ref": ref}) is not None


def test_schemathesis_loads_every_operation():
    loaded = schemathesis.openapi.from_path(DOCUMENT_PATH)
    results = list(loaded.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), [r for r in results if not isinstance(r, Ok)]
    assert {(r.ok().method.upper(), r.ok().path) for r in results} == documented_operations()


def test_every_route_is_documented_and_every_documented_operation_is_a_route(app):
    served, documented = served_operations(app), documented_operations()
    assert served - documented == set(), "routes missing from api/openapi.json"
    assert documented - served == set(), "documented operations that no route serves"
    assert ("GET", "/openapi.json") in served
    assert ("DELETE", "/v1/accounts/{account_id}/proxy/{path}") in served


def test_every_path_parameter_is_declared():
    for path, item in DOCUMENT["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            declared = {
                resolve(p)["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if resolve(p)["in"] == "path"
            }
            assert declared == names, (method, path)


def test_every_error_the_service_defines_is_documented_with_its_status():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    defined = {(cls.status, cls.code) for cls in subclasses(errors.VaultError)}
    assert len(defined) >= 17
    assert defined - documented_error_codes() == set()


def test_v1_operations_need_the_api_key_and_503s_carry_retry_after():
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            if path.startswith("/v1/"):
                assert operation.get("security") == [{"apiKey": []}], (method, path)
                assert "401" in operation["responses"], (method, path)
            else:
                assert {"apiKey": []} not in operation.get("security", []), (method, path)
            if "503" in operation["responses"]:
                headers = resolve(operation["responses"]["503"])["headers"]
                assert "Retry-After" in headers, (method, path)
    assert DOCUMENT["components"]["securitySchemes"]["apiKey"] == {
        **DOCUMENT["components"]["securitySchemes"]["apiKey"],
        "type": "http",
        "scheme": "bearer",
    }


def test_the_service_serves_the_document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == DOCUMENT
