-- The account lifecycle's shared steps, put before every script (after the FIELD and STATUS names).

-- The sealed credentials of an account hash: the legacy one-field form if present, else the pieces joined.
local function sealed_of(account)
  local legacy = redis.call('HGET', account, FIELD.legacy_cred)
  if legacy then return legacy end
  local parts, n = {}, 0
  while true do
    local part = redis.call('HGET', account, FIELD.cred_piece .. n)
    if not part then break end
    parts[#parts + 1] = part
    n = n + 1
  end
  if n == 0 then return false end
  return table.concat(parts)
end

-- Every cached token and failure of the account, with the set that lists them.
local function forget_tokens(cache)
  for _, key in ipairs(redis.call('SMEMBERS', cache)) do redis.call('DEL', key) end
  redis.call('DEL', cache)
end

-- Revoked -> active: a token was fetched with the account's credentials after all. True if it was revoked.
local function activate(account, revoked, account_id, now)
  if redis.call('HGET', account, FIELD.status) == STATUS.active then return false end
  redis.call('HSET', account, FIELD.status, STATUS.active, FIELD.updated, now)
  redis.call('HDEL', account, FIELD.revoked_until)
  redis.call('SREM', revoked, account_id)
  return true
end

-- Field, value pairs into a hash, one HSET each: unpack() of a long list would overflow Lua's stack.
local function hset_pairs(key, list, first)
  for i = first, #list, 2 do redis.call('HSET', key, list[i], list[i + 1]) end
end

-- Append one lifecycle event to the outbox stream (the same script makes the change it reports, so neither
-- exists without the other), count it, and trim the stream: older than the retention (MINID, an id of
-- now minus EVENT_RETENTION) or beyond the count cap (MAXLEN), whole macro nodes at a time (`~`).
-- `extra` holds the type's own data fields as name, value pairs; never a credential or token.
local function emit(events, counts, retain_after, retain_max, kind, account_id, app, extra)
  local entry = {'XADD', events, 'MINID', '~', retain_after, '*', 'type', kind, 'account_id', account_id,
                 'iris_app_id', app}
  for i = 1, #extra do entry[#entry + 1] = extra[i] end
  redis.call(unpack(entry))
  redis.call('XTRIM', events, 'MAXLEN', '~', retain_max)
  redis.call('HINCRBY', counts, kind, 1)
end

-- Webhook delivery (one endpoint): the account's event `event_id` is settled (delivered or failed). If it
-- was the one holding the account back, the next waiting event of the account becomes due now, else
-- the account is free. `held` maps account -> its undelivered event; `waiting` is the account's queue;
-- `owners` maps every event id in `retry` to its account.
local function release_next(retry, owners, held, waiting, account_id, event_id, now)
  if redis.call('HGET', held, account_id) ~= event_id then return end
  local next_id = redis.call('LPOP', waiting)
  if next_id then
    redis.call('HSET', held, account_id, next_id)
    redis.call('ZADD', retry, now, next_id)
    redis.call('HSET', owners, next_id, account_id)
  else
    redis.call('HDEL', held, account_id)
  end
end
