"""The API against its contract (api/openapi.json): schemathesis drives the service as production runs it.

gunicorn per the Procfile (2 workers) on a real port, a real redis-server, the simulator as Trackunit.
Before each operation the document's example account is installed the way Trackunit does it (the
simulator signs and POSTs the callback), so the examples phase, and half of the fuzzed account ids,
reach a real account: its record, tokens fetched from the simulator, and the proxy to the simulator's
API. Callbacks get a valid `Trackunit-Identity` wherever the generated header was schema-valid, so
their bodies reach the parser and the store.

Every operation gets schemathesis' examples, coverage and fuzzing phases (positive and negative data),
with MAX_EXAMPLES fuzzed cases and a fixed seed (derandomized), and every response must pass every
check: no 5xx, status codes, content types, headers and bodies as documented, `/v1` refused without
the API key, schema-violating requests refused; and on the proxy, `Token-Vault-Error` exactly on the
vault's own errors.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from simulator import create_simulator, serve_in_thread
from tests.support.constants import API_KEY, service_env
from tests.support.gunicorn import GunicornServer
from tests.support.installer import Installer

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = ROOT / "api" / "openapi.json"
DOCUMENT = json.loads(OPENAPI_PATH.read_text())
ACCOUNT = DOCUMENT["components"]["schemas"]["AccountId"]["examples"][0]
MAX_EXAMPLES = 25  # fuzzed cases per operation; the examples and coverage phases add their own

# Schema-valid data that the service still refuses with 400, by design, with a documented code (checked by
# response_schema_conformance): a cursor it did not issue, a scope outside APP_SCOPES. Elsewhere a 400 for
# schema-valid data fails the run. The proxy's status is Trackunit's (the simulator's) for whatever path
# was generated, so only its other checks apply. gunicorn refuses a request line over 4094 bytes with 414
# before the application sees it (a proxied path of 2048 characters may be that long once percent-encoded).
SEMANTIC_400 = ["listAccounts", "getToken", "listEvents"]
PROXY = ["proxyGet", "proxyPost", "proxyPut", "proxyPatch", "proxyDelete"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict(
    {
        # The API key is sent explicitly with every call (AUTH), so schemathesis does not generate its own; unknown
        # query parameters and headers are ignored by design, so none are added as "negative" data.
        "generation": {
            "deterministic": True,
            "max-examples": MAX_EXAMPLES,
            "database": "none",
            "with-security-parameters": False,
            "allow-extra-parameters": False,
        },
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSED}},
        "operations": [
            {
                "include-operation-id": SEMANTIC_400,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
            },
            {"include-operation-id": PROXY, "checks": {"positive_data_acceptance": {"enabled": False}}},
        ],
    }
)
schema = schemathesis.openapi.from_path(OPENAPI_PATH, config=CONFIG)


@pytest.fixture(scope="module")
def trackunit():
    app = create_simulator()
    server = serve_in_thread(app, log_requests=False)
    yield server, app.extensions["simulator"]
    server.shutdown()


@pytest.fixture(scope="module")
def live(redis_server, trackunit):
    """The service under gunicorn, once for the module."""
    sim_server, _ = trackunit
    if redis_server.process is None:
        redis_server.start()
    store = redis_server.client()
    store.flushall()
    server = GunicornServer(
        # The feed's long-poll waits at most 1 s here (each fuzzed `wait` up to 30 s would make the run minutes).
        {**service_env(redis_server.url, sim_server.url, key_prefix="contract"), "EVENT_FEED_MAX_WAIT": "1"},
        workers=2,
    ).start()
    yield server
    server.stop()
    store.flushall()
    store.close()


@pytest.fixture(autouse=True)
def installed(live, trackunit):
    """Before each operation, the example account installed by Trackunit (a DELETE may have removed it)."""
    sim_server, sim = trackunit
    Installer(sim, live.url, sim_url=sim_server.url).through_simulator(ACCOUNT)


def component_is_positive(case, location: ParameterLocation) -> bool:
    info = case.meta.components.get(location) if case.meta is not None else None
    return info is not None and info.mode == GenerationMode.POSITIVE


def aim_at_real_things(case, sim) -> None:
    """Point schema-valid generated values at things that exist, deterministically (no randomness here)."""
    if "account_id" in (case.path_parameters or {}) and component_is_positive(case, ParameterLocation.PATH):
        generated = str(case.path_parameters["account_id"])
        if zlib.crc32(generated.encode()) % 2 == 0:
            case.path_parameters["account_id"] = ACCOUNT
    if (
        case.operation.path == "/appinstall"
        and "Trackunit-Identity" in (case.headers or {})
        and component_is_positive(case, ParameterLocation.HEADER)
    ):
        # Signed by the simulator's key (the JWKS the vault trusts), without accountId/irisAppId claims,
        # so that the body alone decides: stored, deleted, ignored, unknown_app or invalid_request.
        case.headers["Trackunit-Identity"] = sim.identity_token({})


def token_vault_error_marks_vault_errors(ctx, response, case):
    """On the proxy, `Token-Vault-Error: <code>` comes with the vault's error body of that code, and only then."""
    if "/proxy/" not in case.operation.path:
        return None
    marker = response.headers.get("token-vault-error")
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    vault_shaped = (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
    )
    if marker is not None:
        assert len(marker) == 1 and response.status_code >= 400, f"Token-Vault-Error {marker} on {response.status_code}"
        assert vault_shaped and body["error"]["code"] == marker[0], f"Token-Vault-Error {marker} with body {body!r}"
    else:
        assert not vault_shaped, f"a vault-shaped error without Token-Vault-Error: {body!r}"
    return True


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_every_operation_conforms(case, live, trackunit):
    aim_at_real_things(case, trackunit[1])
    # The API key as an explicit header: schemathesis' ignored_auth check then also sends each /v1 operation
    # without it and with an invalid one, and expects 401.
    case.call_and_validate(
        base_url=live.url, headers=AUTH, timeout=30, additional_checks=[token_vault_error_marks_vault_errors]
    )
