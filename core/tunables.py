"""Every fixed tunable of the service, named, in one place (no imports, no environment).

Values an operator sets live in `config`; these are the engineering choices
behind bounded waits, single-flight and caching.
"""

# Requests -----------------------------------------------------------------
MAX_BODY_BYTES = 64 * 1024  # callback bodies are a few hundred bytes
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Concurrency -------------------------------------------------------------------
# gunicorn's gevent worker holds every request as a greenlet; MAX_IN_FLIGHT (config) bounds how
# many one worker works on at once. It also accepts more connections than that, so that a
# request above the limit is read and answered 503 `overloaded` instead of waiting unaccepted:
# worker_connections = MAX_IN_FLIGHT x this + the spare below (idle keep-alive connections,
# clients still sending their headers, overload answers).
WORKER_CONNECTIONS_PER_IN_FLIGHT = 2
WORKER_CONNECTIONS_SPARE = 50
# A client has this long for its whole request body once the headers are in (the headers get
# gunicorn's `keepalive` seconds); after it the request is answered 408 and the connection ends.
# Bodies are at most 1 MiB (the proxy) and usually a few hundred bytes (callbacks).
CLIENT_BODY_DEADLINE = 10.0
CLIENT_SEND_TIMEOUT = 30.0  # one send to a client that does not read its answer (gevent: a whole sendall)

# Redis ----------------------------------------------------------------------
REDIS_SOCKET_TIMEOUT = 2.0  # seconds; a hanging Redis must not hang a request
REDIS_CONNECT_TIMEOUT = 2.0
REDIS_HEALTH_CHECK_INTERVAL = 15
REDIS_RETRIES = 1  # one quick reconnect attempt, then StoreUnavailable
# Every command holds a pooled connection for one round trip, so a few connections serve many
# in-flight requests; a request waits at most this for a free one, then gets store_unavailable.
# The pool's size is REDIS_MAX_CONNECTIONS (config: a Redis plan limits its clients).
REDIS_POOL_TIMEOUT = 2.0

# Trackunit token endpoint ---------------------------------------------------
# A hanging endpoint: 3 attempts x 3.5 s read + < 1 s backoff, inside TRACKUNIT_FETCH_DEADLINE.
TRACKUNIT_CONNECT_TIMEOUT = 2.0
TRACKUNIT_READ_TIMEOUT = 3.5
TRACKUNIT_RETRIES = 2  # after the first attempt
TRACKUNIT_BACKOFF_FACTOR = 0.25
TRACKUNIT_BACKOFF_JITTER = 0.25
TRACKUNIT_BACKOFF_MAX = 1.0
TRACKUNIT_RETRY_AFTER_MAX = 2  # seconds we are willing to sleep inside one request
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
# The read timeout bounds each socket read, not a fetch: headers or a body dripping one byte
# per read would outlast the single-flight lock. Every attempt and every byte end within this
# (core.deadline), inside TOKEN_REQUEST_BUDGET.
TRACKUNIT_FETCH_DEADLINE = 13.0
# Connections kept to the token endpoint: one per request in flight (a cold fan-out fetches for
# every one of them at once) plus the refresh-ahead workers; more are opened and closed, never waited for.
REFRESH_AHEAD_WORKERS = 2
BODY_READ_CHUNK = 8 * 1024
DEFAULT_EXPIRES_IN = 300  # when Trackunit omits expires_in: assume short, never forever

# Token cache and single-flight ------------------------------------------------
TOKEN_REQUEST_BUDGET = 15.0  # seconds a token request may wait in total
LOCK_TIMEOUT = 30.0  # a killed worker's lock frees itself after this
LOCK_POLL_INTERVAL = 0.05
REFRESH_AHEAD_SECONDS = 30.0  # refresh this long before the cache entry expires...
# ...but never earlier than this fraction of its lifetime: each refresh gives up that slice of a
# lifetime, so upstream calls per cache lifetime stay under 1 / (1 - 0.04) = 1.042.
REFRESH_AHEAD_FRACTION = 0.04
REFRESH_BACKOFF_SECONDS = 5  # after a failed refresh-ahead, wait before the next try
REFRESH_ATTEMPT_INTERVAL = 1.0  # a process asks Redis for a slot's refresh-ahead lock at most this often
FAILURE_TTL_UNAVAILABLE = 5  # cold waiters share one failure instead of stampeding
FAILURE_TTL_SCOPE_NOT_GRANTED = 30

# Identity (Trackunit-Identity JWT) -------------------------------------------
JWKS_TIMEOUT = 3.0
JWKS_CACHE_SECONDS = 300
JWKS_REFRESH_COOLDOWN = 30.0  # an unknown kid refetches the JWKS at most this often
IDENTITY_LEEWAY = 60  # seconds of clock skew accepted on exp/nbf/iat
IDENTITY_REPLAY_WINDOW = 24 * 3600  # how long a used identity token's jti stays tied to its message (at most)
# An UNINSTALLED callback makes one verification fetch per account in this many seconds, however
# many arrive (a replayed token cannot spend the account's rate budget at Trackunit).
UNINSTALL_VERIFY_INTERVAL = 10

# Proxy to Trackunit's API ----------------------------------------------------
PROXY_MAX_BODY_BYTES = 1024 * 1024  # request bodies are JSON documents; buffered so PUT can be retried
PROXY_CONNECT_TIMEOUT = 3.0
PROXY_READ_TIMEOUT = 30.0  # per socket read; large answers stream through
PROXY_RETRIES = 2  # 429/5xx on GET, HEAD, PUT, DELETE only
PROXY_BACKOFF_FACTOR = 0.25
PROXY_BACKOFF_JITTER = 0.25
PROXY_RETRY_AFTER_MAX = 5
PROXY_CHUNK_BYTES = 64 * 1024
# A request holds at most one upstream connection at a time, so each worker keeps MAX_IN_FLIGHT of
# them per host (connections reused, no new TLS handshake per call); this many hosts are pooled.
PROXY_POOL_HOSTS = 4

# In-process token cache (per worker) ------------------------------------------
LOCAL_CACHE_MAX_ACCOUNTS = 10_000
# A worker serves from memory only while its invalidation subscription has
# proven itself this recently (a PING answered on the subscribed connection):
# every invalidation published before that PING has been applied, so no
# worker serves a dropped token for longer than this (plus a round trip).
INVALIDATION_MAX_STALENESS = 0.8
INVALIDATION_PING_INTERVAL = 0.2
INVALIDATION_RECONNECT_DELAY = 0.5
INVALIDATION_IDLE_STOP = 60.0  # a worker that served no token for this long stops listening
# Requests of one worker that miss memory for the same token or API key at once share one Redis
# read (auth.memory.shared) begun at most this long ago: no older than memory is trusted for.
SHARED_READ_WINDOW = INVALIDATION_MAX_STALENESS
# The longest a request waits for another's read: the pool's wait and every attempt's connect and read.
SHARED_READ_WAIT = REDIS_POOL_TIMEOUT + (REDIS_CONNECT_TIMEOUT + REDIS_SOCKET_TIMEOUT) * (REDIS_RETRIES + 1) + 1.0

# API keys (auth.callers, auth.ratelimit) ----------------------------------------------------------
# A managed key's "last used" is written at most this often per key per process (never per request).
APIKEY_LAST_USED_INTERVAL = 60.0
# Managed keys a worker remembers (found, and presented but not found), while the invalidation feed is fresh.
APIKEY_CACHE_MAX_KEYS = 1000
APIKEY_CACHE_MAX_UNKNOWN = 1000
# Account lifecycle events (events/) ---------------------------------------------
# The feed's long-poll and the deliverers wait on one watcher per worker process: a loop of
# XREAD BLOCK on one pooled Redis connection (inside REDIS_SOCKET_TIMEOUT), that wakes every waiter
# when the stream grows; it stops after this long without a waiter and starts again on the next.
EVENT_WATCH_BLOCK_MS = 1000
EVENT_WATCH_IDLE_STOP = 60.0
EVENT_WATCH_RECONNECT_DELAY = 0.5
# On a Redis Cluster one XREAD of every group's stream is CROSSSLOT: the watcher polls the newest id
# of each group (one pipelined round per master) this often instead.
EVENT_WATCH_POLL_MS = 200
# The feed hands out only events below a horizon no later commit can go under (events.feed): the
# server's TIME on a single Redis or Sentinel; on a Redis Cluster the earliest of the masters' TIME
# minus this margin, for a group that moves to a master whose clock is behind (failover, resharding):
# ids it hands out never go back as long as a group's old and new master agree within it. Events reach
# a cluster's readers this much later.
EVENT_FEED_SETTLE_MS = 1000
FEED_DEFAULT_LIMIT = 100
FEED_MAX_LIMIT = 500
FEED_MAX_WAIT = 30  # seconds; behind Heroku's router (30 s) ask for at most 25
# Webhook delivery: one attempt (connect + headers + body) ends within this; the receiver's answer
# is read up to this many bytes (only its status matters); redirects are never followed.
WEBHOOK_ATTEMPT_DEADLINE = 10.0
WEBHOOK_CONNECT_TIMEOUT = 3.0
WEBHOOK_MAX_RESPONSE_BYTES = 64 * 1024
WEBHOOK_RETRY_JITTER = 0.1  # each retry's delay is scheduled +-10 %, so failed endpoints are not hit in waves
# Per endpoint: deliveries in flight at once (events of different accounts; one account's in order),
# and events read from the stream per round.
WEBHOOK_CONCURRENCY = 16
WEBHOOK_BATCH = 100
# One process delivers to an endpoint at a time (its lease, renewed while it lives); when it dies,
# another takes the lease after this long and claims its unacknowledged entries (XAUTOCLAIM).
WEBHOOK_LEASE_SECONDS = 5.0
WEBHOOK_LEASE_RENEW = 1.0
WEBHOOK_CONSUMER_FORGET = 3600.0  # a consumer with nothing pending, idle this long, is a process gone
WEBHOOK_IDLE_POLL = 1.0  # a deliverer without the lease, or without work, looks again this often
WEBHOOK_FAILED_KEPT = 10_000  # failed events remembered per endpoint (for `events list --failed`, replay)
