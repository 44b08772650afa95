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

-- The outbox of one slot group, as every emitting script is given it (vault.outbox.Outbox.script_args):
-- its stream, counts by type, newest id, newest id a trim removed, trimming (MINID, MAXLEN), the group's
-- number and the number of groups.
local function outbox_of(events, counts, last, trimmed, retain_after, retain_max, group, groups)
  return {events = events, counts = counts, last = last, trimmed = trimmed, retain_after = retain_after,
          retain_max = tonumber(retain_max), group = tonumber(group), groups = tonumber(groups)}
end

-- An event id `<ms>-<seq>` as two numbers (exact below 2^53: milliseconds, and this service's sequences).
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_below(a, b)
  local a_ms, a_seq = id_parts(a)
  local b_ms, b_seq = id_parts(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

-- The id of the group's next event, `<ms>-<seq>`: ms is the server's time, never below the group's newest
-- event's; seq is the group's number the first time in a millisecond, then GROUPS more each time. So
-- seq % GROUPS is the group, ids of different groups never collide, and each group's ids grow.
local function next_event_id(box)
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local seq = box.group
  local last = redis.call('GET', box.last)
  if not last then  -- none yet, or the string was lost: the stream's newest entry, if any, says the same
    local newest = redis.call('XREVRANGE', box.events, '+', '-', 'COUNT', 1)[1]
    if newest then last = newest[1] end
  end
  if last then
    local last_ms, last_seq = string.match(last, '^(%d+)-(%d+)$')
    last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
    if last_ms >= ms then
      ms = last_ms
      seq = last_seq + box.groups
    end
  end
  return string.format('%.0f-%.0f', ms, seq)
end

-- Trim the group's stream, exactly: older than the retention (MINID, an id of now minus EVENT_RETENTION)
-- and beyond the group's share of the count cap (MAXLEN). Exactly, so that the newest entry removed is known
-- before it goes: the group's `trimmed` string keeps the newest id any trim removed. A reader's cursor below
-- it has lost events; one at or above it has lost none of this group's (the feed's 410: events.feed).
-- Costs an XREVRANGE COUNT 1 and an XLEN (O(log n)) per event; when something goes, its XTRIM, an XRANGE
-- COUNT k for k entries over the cap (1 in the steady state), a GET and a SET.
local function trim(box)
  local removed = nil
  if box.retain_after ~= '0-0' then
    removed = redis.call('XREVRANGE', box.events, '(' .. box.retain_after, '-', 'COUNT', 1)[1]
    if removed then redis.call('XTRIM', box.events, 'MINID', box.retain_after) end
  end
  local over = redis.call('XLEN', box.events) - box.retain_max
  if over > 0 then
    local oldest = redis.call('XRANGE', box.events, '-', '+', 'COUNT', over)
    removed = oldest[#oldest]  -- newer than anything MINID removed
    redis.call('XTRIM', box.events, 'MAXLEN', box.retain_max)
  end
  if removed then
    local bound = redis.call('GET', box.trimmed)
    if not bound or id_below(bound, removed[1]) then redis.call('SET', box.trimmed, removed[1]) end
  end
end

-- Append one lifecycle event to the group's outbox stream (the same script makes the change it reports, so
-- neither exists without the other), count it, and trim the stream (`trim`).
-- `extra` holds the type's own data fields as name, value pairs; never a credential or token.
local function emit(box, kind, account_id, app, extra)
  local id = next_event_id(box)
  local entry = {'XADD', box.events, id, 'type', kind, 'account_id', account_id, 'iris_app_id', app}
  for i = 1, #extra do entry[#entry + 1] = extra[i] end
  redis.call(unpack(entry))
  trim(box)
  redis.call('SET', box.last, id)
  redis.call('HINCRBY', box.counts, kind, 1)
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
