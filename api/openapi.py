"""`GET /openapi.json`: the OpenAPI 3.1 document of every endpoint (api/openapi.json), read once at import."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")
# Parsed once (a broken file fails at start-up, not on a request), then served as compact bytes.
DOCUMENT: dict = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
_BODY = json.dumps(DOCUMENT, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@bp.get("/openapi.json")
def openapi_document() -> Response:
    response = Response(_BODY, mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
