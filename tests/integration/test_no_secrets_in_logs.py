"""A whole flow under gunicorn: no secret the simulator or the configuration handed out reaches any log line."""

import json

import requests

from tests.support.constants import API_KEY, VAULT_KEY
from tests.support.gunicorn import GunicornServer
from tests.support.installer import Installer

ACCOUNT = "acc-logs"
SHAPED = "0oaShapedLikeAClientSecret0123"  # sent in a path, as `client_secret=...`: redacted by its shape


def test_full_flow_logs_no_secret_and_sigterm_exits_cleanly(env, sim_server, sim):
    # Floor 0: the second forced refresh below must reach Trackunit to see the revocation.
    # gunicorn's access log (off by default) turned on: its lines, made by its own handler, are checked too.
    server = GunicornServer(
        {**env, "FORCE_REFRESH_FLOOR": "0", "GUNICORN_CMD_ARGS": "--access-logfile -"}, workers=2
    ).start()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    base = f"{server.url}/v1/accounts/{ACCOUNT}"
    secrets = {API_KEY, VAULT_KEY}
    try:
        installer = Installer(sim, server.url, sim_url=sim_server.url)

        def install():
            result = installer.through_simulator(ACCOUNT)
            secrets.update({result["clientSecret"], result["identityToken"]})

        def token(**params):
            r = requests.get(f"{base}/token", params=params, headers=auth, timeout=20)
            if r.status_code == 200:
                secrets.add(r.json()["access_token"])
            return r

        install()
        assert token().status_code == 200
        assert token(force_refresh="true").status_code == 200
        assert token(scope="asset.view").status_code == 200
        r = requests.get(f"{base}/proxy/api/asset/v1/assets?size=5", headers=auth, timeout=20)
        assert r.status_code == 200
        requests.post(f"{sim_server.url}/_sim/accounts/{ACCOUNT}/revoke", timeout=5)
        assert token(force_refresh="true").status_code == 410
        install()  # re-install with new credentials
        assert token().status_code == 200
        assert (
            requests.get(
                f"{base}/token", headers={"Authorization": "Bearer wrong-key-0123456789"}, timeout=10
            ).status_code
            == 401
        )
        assert requests.delete(base, headers=auth, timeout=10).status_code == 204
        # A path only gunicorn's access log writes (its own handler, not the root logger's), when it is on.
        assert requests.get(f"{server.url}/client_secret={SHAPED}", timeout=10).status_code == 404
        secrets.add(SHAPED)
    finally:
        server.stop()
    assert server.process is None and server.exit_code == 0  # SIGTERM: a clean, prompt exit

    log = server.log()
    assert "credentials_stored" in log and "token_issued" in log  # the audit lines are there
    assert '"GET /client_secret=[redacted]" 404' in log  # gunicorn's access line, redacted too
    leaks = [s for s in secrets if s in log]
    assert not leaks, f"{len(leaks)} secret(s) found in the logs"
    json_lines = [line for line in log.splitlines() if line.startswith("{")]
    assert json_lines and all(isinstance(json.loads(line), dict) for line in json_lines)
    issued = [json.loads(line) for line in json_lines if '"token_issued"' in line]
    assert issued and all(line["key_name"] == "ops" and line["account_id"] == ACCOUNT for line in issued)
