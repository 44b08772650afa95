"""gunicorn settings, Heroku-style: PORT, WEB_CONCURRENCY and MAX_IN_FLIGHT come from the environment.

The worker class is gevent: every request is a greenlet, and every wait on the network (Trackunit,
Redis, a slow client) yields to the others, so one worker holds MAX_IN_FLIGHT calls at once
instead of one per thread (README, "Deploying"). gunicorn's gevent worker monkey-patches the
standard library (socket, ssl, threading, time, select, queue) in each worker right after the
fork and only then imports the app (`wsgi:app`), so redis-py, urllib3/requests, the invalidation
listener, the refresh-ahead pool and the fetch deadline's timers are all cooperative. That is why
`preload_app` must stay off, and why the master imports nothing of the app here beyond `config`
(validation) and `tunables` (constants), neither of which touches the network.
`GUNICORN_CMD_ARGS="--worker-class gthread --threads 32"` would still run the old model.
"""

import os
import sys

from core import tunables

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gevent's worker, whose own refusals (414, 431, 400 for a request it cannot parse) are JSON (core/server.py).
worker_class = "core.server.JsonErrorGeventWorker"
preload_app = False  # see above: the app must be imported after the worker's monkey-patching


def _max_in_flight() -> int:
    """MAX_IN_FLIGHT as config.py reads it; a malformed value is refused by on_starting, with one line."""
    from core.config import ConfigError, max_in_flight

    try:
        return max_in_flight(os.environ)
    except ConfigError:
        return 1  # never used: on_starting stops the master first


# More connections than requests in flight, so that the request above the limit is read and
# answered 503 at once (api.admission) rather than left waiting in the listen queue.
worker_connections = _max_in_flight() * tunables.WORKER_CONNECTIONS_PER_IN_FLIGHT + tunables.WORKER_CONNECTIONS_SPARE
timeout = 30  # the worker's heartbeat; a token request is bounded well inside it (tunables.TOKEN_REQUEST_BUDGET)
graceful_timeout = 20  # Heroku sends SIGKILL 30 s after SIGTERM
# Idle keep-alive connections close after this. Under the gevent worker it is also the deadline for
# a request's whole header block (gunicorn wraps reading it in gevent.Timeout(keepalive)): a client
# dripping its headers is dropped after 5 s. It must stay above 0 for that.
keepalive = 5
# No access log by default: the app writes one JSON line per request itself (api.requestlog: request
# id, method, route, status, duration, API key name) and Heroku's router logs every request too.
# gunicorn's line repeated that in another format at a cost the bench measured (about a fifth of a
# /healthz request's time in the worker). GUNICORN_CMD_ARGS="--access-logfile -" turns it on.
accesslog = None
# If turned on: the query string can carry nothing secret, but keep access lines short.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
errorlog = "-"
# Heroku's router sets X-Forwarded-For, -Proto and -Port, and clients cannot reach a dyno directly.
forwarded_allow_ips = "*"
# ...but only those: gunicorn would also take SCRIPT_NAME and PATH_INFO from request headers of a
# trusted peer (its default), and with every peer trusted, any client could change the script name
# or the path the app routes on. Heroku's router sets neither; with none listed, gunicorn drops them.
forwarder_headers = ""
limit_request_field_size = 16384  # room for a Trackunit-Identity JWT
# No gunicornc control socket: it would be one more way to resize or stop the service, and every
# gunicorn of one user on a machine (tests, the benchmark, a dev server) would share its path.
control_socket_disable = True


def on_starting(server):
    """Validate the configuration once in the master, so a bad deployment fails with one clear line.

    `make run` goes through here too; it sets METRICS_PUBLIC=true itself, and says so.
    """
    from core import logs
    from core.config import Config, ConfigError, check_production

    try:
        config = Config.from_env(os.environ)
        check_production(config)
    except ConfigError as exc:
        print(f"iris-token-vault: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    logs.configure(config.secrets)  # the master's own lines pass the redaction net too
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # samples of a previous run would be counted again
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


# Prometheus multiprocess mode: every worker writes its samples under this
# directory and /metrics merges them. It must be set before any worker imports
# prometheus_client, and emptied when the server starts.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="itv-prometheus-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
