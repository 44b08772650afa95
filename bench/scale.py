"""Section 6: installing N accounts (callback and direct), Redis memory per account, and paging
(run first, so that every later figure is measured with N accounts in Redis)."""

from __future__ import annotations

import secrets
import statistics
import string
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import ACCOUNT_SCOPES, APP_ID, SetupError, log, ms, percentile
from vault.accounts import AccountRepository, Credentials
from vault.layout import KeySpace
from vault.seal import Sealer

_ALNUM = string.ascii_letters + string.digits


class Scale:
    """Installing N accounts (callback and direct), Redis memory per account, and paging.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def install_accounts(self) -> None:
        s, r = self.s, self.report
        before = self._settled_used_memory()
        log(f"preparing {s.callback_installs} accounts at the simulator (credentials, signed identity)")
        prepared = self._prepare_callbacks(s.callback_installs)
        log(f"installing {len(prepared)} accounts through POST /appinstall, {s.install_concurrency} concurrent")
        local = threading.local()

        def post(item: tuple[str, dict, str]) -> tuple[int, str, float]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            account_id, body, identity = item
            started = time.perf_counter()
            response = local.session.post(
                self.base + "/appinstall", json=body, headers={"Trackunit-Identity": identity}, timeout=30
            )
            elapsed = time.perf_counter() - started
            status = response.json().get("status") if response.status_code == 200 else response.text[:200]
            return response.status_code, status, elapsed

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=s.install_concurrency) as pool:
            results = list(pool.map(post, prepared))
        elapsed = time.monotonic() - started
        stored = sum(1 for code, status, _ in results if code == 200 and status == "stored")
        self.callback_ids = [item[0] for item in prepared]
        self.client_of = {item[0]: item[1]["clientId"] for item in prepared}
        latencies = [x for _, _, x in results]
        r.row(
            "6",
            f"install callback: POST /appinstall, {s.install_concurrency} concurrent, {len(prepared)} accounts",
            f"{len(prepared) / elapsed:.0f} req/s (p50 {ms(percentile(latencies, 50))}, "
            f"p99 {ms(percentile(latencies, 99))})",
        )
        r.row(
            "6",
            "install callback: answered 200 stored",
            f"{stored} of {len(prepared)}",
            "all",
            r.count("callback installs", stored == len(prepared)),
        )

        direct = s.accounts - len(prepared)
        if direct > 0:
            how = "one call at a time from 16 threads" if self.on_cluster else "pipelined"
            log(f"installing {direct} more accounts directly in Redis (AccountRepository's install script, {how})")
            started = time.monotonic()
            self._install_direct(direct)
            elapsed = time.monotonic() - started
            r.notes.append(
                f"{direct:,} of the {s.accounts:,} accounts were written directly to Redis through "
                f"vault.accounts.AccountRepository.install "
                f"{'from 16 threads (a cluster pipeline refuses scripts)' if self.on_cluster else 'on a pipeline'} "
                f"(same script, same sealed "
                f"format), {direct / elapsed:,.0f} accounts/s; the rest through the real callback."
            )
        after = self._settled_used_memory()
        layout = KeySpace(self.config.key_prefix)
        total = sum(int(self.redis.zcard(layout.index(group))) for group in layout.groups)
        r.row(
            "6",
            "accounts installed (ZCARD of every group index)",
            f"{total:,}",
            f"{s.accounts:,}",
            r.count("installed accounts", total == s.accounts),
        )
        keys = KeySpace(self.config.key_prefix)
        sample = (self.callback_ids[:3] + self.direct_ids[:3])[:6]
        usages = [self.redis.memory_usage(keys.key_for(a), samples=0) or 0 for a in sample]
        index_bytes = sum(self.redis.memory_usage(keys.index(g), samples=0) or 0 for g in keys.groups)
        per_account = (after - before) / s.accounts
        hash_bytes = statistics.median(usages)
        key = keys.key_for(sample[0])
        encoding = self.redis.object("encoding", key).decode()
        longest = max(len(v) for v in self.redis.hgetall(key).values())
        r.row(
            "6", f"Redis memory per account: used_memory delta / N (N = {s.accounts:,})", f"{per_account:.0f} B", "", ""
        )
        r.row(
            "6",
            f"MEMORY USAGE of one account hash (credential record; median of {len(usages)})",
            f"{hash_bytes:.0f} B, {encoding} (+ {index_bytes / s.accounts:.0f} B in the id index)",
            "<= 512 B",
            "ok" if hash_bytes <= 512 else "MISSED",
        )
        if self.on_cluster:
            return  # the what-if below changes one server's configuration
        limit = int(self.redis.config_get("hash-max-listpack-value").get("hash-max-listpack-value", 64))
        if encoding == "hashtable" and longest > limit:
            r.notes.append(
                f"the account hash is {encoding}-encoded because its longest value (the sealed `cred`, "
                f"{longest} B) exceeds hash-max-listpack-value ({limit}); "
                f"{self._listpack_what_if(key, longest)}"
            )

    def _listpack_what_if(self, key: str, longest: int) -> str:
        """The same record restored as a listpack (in this private Redis only, setting put back)."""
        name = "hash-max-listpack-value"
        old = self.redis.config_get(name)[name]
        scratch = key + ":bench-what-if"
        try:
            self.redis.config_set(name, max(128, 1 << (longest - 1).bit_length()))
            self.redis.restore(scratch, 0, self.redis.dump(key), replace=True)
            size = self.redis.memory_usage(scratch, samples=0)
            encoding = self.redis.object("encoding", scratch).decode()
            value = self.redis.config_get(name)[name]
        finally:
            self.redis.delete(scratch)
            self.redis.config_set(name, old)
        return f"with {name} {value} the same record takes {size} B ({encoding})."

    def _settled_used_memory(self) -> int:
        """used_memory once it stops moving (pub/sub buffers drain), at most 5 s."""
        last = self.used_memory()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.used_memory()
            if abs(now - last) <= 4096:
                return now
            last = now
        return last

    def _prepare_callbacks(self, count: int) -> list[tuple[str, dict, str]]:
        local = threading.local()

        def prepare(_: int) -> tuple[str, dict, str]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            account_id = str(uuid.uuid4())
            creds = self.sim._post(
                "/_sim/accounts",
                {"accountId": account_id, "scopes": ACCOUNT_SCOPES, "irisAppId": APP_ID},
                local.session,
            )
            identity = self.sim._post(
                "/_sim/identity",
                {"claims": {"irisAppId": APP_ID, "accountId": account_id}, "expires_in": 900},
                local.session,
            )["token"]
            body = {
                "type": "INSTALLED",
                "irisAppId": APP_ID,
                "accountId": account_id,
                "clientId": creds["clientId"],
                "clientSecret": creds["clientSecret"],
            }
            return account_id, body, identity

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(prepare, range(count)))

    def _install_direct(self, count: int) -> None:
        sealer, keys = Sealer(self.config.keyring), KeySpace(self.config.key_prefix)
        if self.on_cluster:
            self._install_direct_on_cluster(count, sealer, keys)
            return
        batch = 1000
        for start in range(0, count, batch):
            self.budget.check("direct installs")
            pipe = self.redis.pipeline(transaction=False)
            repository = AccountRepository(pipe, sealer, keys)
            for _ in range(min(batch, count - start)):
                account_id = str(uuid.uuid4())
                creds = Credentials(
                    client_id="0oa" + "".join(secrets.choice(_ALNUM) for _ in range(17)),
                    client_secret=secrets.token_urlsafe(32),
                )
                repository.install(account_id, APP_ID, creds)
                self.direct_ids.append(account_id)
            pipe.execute()

    def _install_direct_on_cluster(self, count: int, sealer: Sealer, keys: KeySpace) -> None:
        """The same script, one call at a time from 16 threads: a cluster pipeline does not load scripts."""
        repository = AccountRepository(self.redis, sealer, keys)

        def install(_: int) -> str:
            account_id = str(uuid.uuid4())
            creds = Credentials(
                client_id="0oa" + "".join(secrets.choice(_ALNUM) for _ in range(17)),
                client_secret=secrets.token_urlsafe(32),
            )
            repository.install(account_id, APP_ID, creds)
            return account_id

        with ThreadPoolExecutor(max_workers=16) as pool:
            for start in range(0, count, 1000):
                self.budget.check("direct installs")
                self.direct_ids.extend(pool.map(install, range(min(1000, count - start))))

    def paging(self) -> None:
        s, r = self.s, self.report
        limit = s.page_size
        log(f"paging through GET /v1/accounts?limit={limit}")
        self.http.get(self.base + "/v1/accounts", params={"limit": 1}, timeout=30).raise_for_status()  # warm
        cursor, ids, times, sizes, cursors = None, [], [], [], []
        for _ in range(s.accounts // limit + 2):
            self.budget.check("paging")
            cursors.append(cursor)
            elapsed, page = self._page(limit, cursor)
            times.append(elapsed)
            ids.extend(a["account_id"] for a in page["accounts"])
            sizes.append(len(page["accounts"]))
            cursor = page["next_cursor"]
            if not cursor:
                break
        complete = len(ids) == s.accounts and len(set(ids)) == len(ids) and ids == sorted(ids)
        # Start, middle and end timed again, interleaved (A B C A B C ...), so noise hits all three alike.
        full = [i for i, n in enumerate(sizes) if n == limit] or list(range(len(sizes)))
        chosen = [full[0], full[len(full) // 2], full[-1]]
        rounds = 3 if s.smoke else 7
        samples: list[list[float]] = [[], [], []]
        for _ in range(rounds):
            self.budget.check("paging")
            for slot, index in enumerate(chosen):
                samples[slot].append(self._page(limit, cursors[index])[0])
        start_t, mid_t, end_t = (statistics.median(x) for x in samples)
        flat = max(mid_t, end_t) <= 1.5 * start_t
        r.row(
            "6",
            f"paging GET /v1/accounts?limit={limit}: time per page at the start / middle / end of the id "
            f"range (pages {chosen[0] + 1}, {chosen[1] + 1}, {chosen[2] + 1}; median of {rounds} interleaved)",
            f"{ms(start_t)} / {ms(mid_t)} / {ms(end_t)}",
            "flat (<= 1.5 x start)",
            self.judged(flat),
        )
        r.row(
            "6",
            f"paging: every account once, in id order ({len(times)} pages, {sum(times):.1f} s in all)",
            f"{len(ids):,}",
            f"{s.accounts:,}",
            r.count("paging", complete),
        )

    def _page(self, limit: int, cursor: str | None) -> tuple[float, dict]:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        started = time.perf_counter()
        response = self.http.get(self.base + "/v1/accounts", params=params, timeout=60)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SetupError(f"GET /v1/accounts: {response.status_code} {response.text[:300]}")
        return elapsed, response.json()
