"""Trackunit over HTTPS: the JWKS, the token endpoint and the API, trusting TRACKUNIT_CA_BUNDLE.

The simulator serves HTTPS on a certificate of its own test CA. With that CA as the bundle, every
call to Trackunit verifies; without it, none does (the system's CAs do not know it), and each
answers as an unreachable dependency does, never by trusting the certificate anyway.
"""

from __future__ import annotations

import pytest

from core.config import Config, ConfigError
from tests.support.constants import ACCOUNT
from tests.support.flows import wait_for


def https_app(make_app, server, **overrides):
    return make_app(
        TRACKUNIT_TOKEN_URL=f"{server.url}/apptoken",
        TRACKUNIT_JWKS_URL=f"{server.url}/api/marketplace/jwks",
        TRACKUNIT_API_URL=server.url,
        **overrides,
    )


def test_every_call_to_trackunit_verifies_against_the_bundle(
    make_app, tls_server, certificates, installer, auth_headers, sim
):
    client = https_app(make_app, tls_server, TRACKUNIT_CA_BUNDLE=str(certificates.ca)).test_client()
    installer.to(client).install(ACCOUNT)  # the JWKS over HTTPS
    token = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers)
    assert token.status_code == 200, token.get_data(as_text=True)
    proxied = client.get(f"/v1/accounts/{ACCOUNT}/proxy/api/asset/v1/assets", headers=auth_headers)
    assert proxied.status_code == 200, proxied.get_data(as_text=True)
    stats = sim.connection_stats
    assert stats["tls_handshakes"] >= 3 and stats["tls_handshake_failures"] == 0


def test_without_the_bundle_the_certificate_is_refused(make_app, tls_server, installer, sim):
    client = https_app(make_app, tls_server).test_client()
    body = installer.message(ACCOUNT)
    response = installer.to(client).post(body)
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "identity_unavailable"
    wait_for(lambda: sim.connection_stats["tls_handshake_failures"] >= 1)  # counted by the server's thread


@pytest.mark.parametrize(
    "content, message", [(None, "readable PEM file"), ("not a certificate", "no PEM")], ids=["missing", "not_pem"]
)
def test_a_bad_bundle_stops_start_up_with_one_line(content, message, env, tmp_path):
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Config.from_env({**env, "TRACKUNIT_CA_BUNDLE": str(path)})
