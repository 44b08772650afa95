"""gunicorn settings, Heroku-style: PORT and WEB_CONCURRENCY come from the environment."""
import os
import sys

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30  # a token request is bounded well inside this (tunables.TOKEN_REQUEST_BUDGET)
graceful_timeout = 20  # Heroku sends SIGKILL 30 s after SIGTERM
keepalive = 5
accesslog = "-"
# The query string can carry nothing secret, but keep access lines short: method, path, status, time.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
errorlog = "-"
forwarded_allow_ips = "*"  # Heroku's router sets X-Forwarded-*
limit_request_field_size = 16384  # room for a Trackunit-Identity JWT


def on_starting(server):
    """Validate the configuration once in the master, so a bad deployment fails with one clear line."""
    from core.config import Config, ConfigError

    try:
        Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"iris-token-vault: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
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
