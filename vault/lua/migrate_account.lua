-- Move one account from the single-Redis layout (before slot groups) into its slot group, in one step.
-- The single Redis only: it touches keys of both layouts, all of them declared here.
-- `slot_keys`: the account's legacy token keys, each followed by its new name (the first 2 x n_tokens),
-- then the legacy keys that are dropped (failure markers, locks); together they must cover the legacy
-- cache set, else nothing is done and {-1, members} tells the caller which keys to declare.
-- Returns {outcome, tokens moved}: 0 nothing legacy was there, 1 moved, 2 the new layout already held the
-- account (installed anew since the upgrade: that record wins, the legacy one is dropped), 3 legacy
-- leftovers without a record (an index entry, cache keys) were dropped.
-- KEYS: legacy_account, legacy_cache, legacy_verifying, legacy_index, legacy_revoked, legacy_generation, account, cache, index, revoked, generation, ...slot_keys
-- ARGV: account_id, channel, n_tokens
local n_fixed = 11
local n_tokens = tonumber(ARGV[3])
local account_id = ARGV[1]

-- Generations are never reused: the group's counter is at least the legacy one before anything moves.
local legacy_generation = redis.call('GET', KEYS[6])
if legacy_generation and tonumber(legacy_generation) > tonumber(redis.call('GET', KEYS[11]) or '0') then
  redis.call('SET', KEYS[11], legacy_generation)
end

if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) == 0 and not redis.call('ZSCORE', KEYS[4], account_id)
    and redis.call('SISMEMBER', KEYS[5], account_id) == 0 then
  return {0, 0}
end

local declared = {}
for i = n_fixed + 1, #KEYS do declared[KEYS[i]] = true end
local members = redis.call('SMEMBERS', KEYS[2])
for _, member in ipairs(members) do
  if not declared[member] then return {-1, members} end
end

local outcome, moved_tokens = 3, 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[7]) == 0 then
    local status = redis.call('HGET', KEYS[1], FIELD.status)
    -- RENAME keeps every field byte for byte (sealed values do not name their key).
    redis.call('RENAME', KEYS[1], KEYS[7])
    redis.call('ZADD', KEYS[9], 0, account_id)
    if status == STATUS.revoked then
      redis.call('SADD', KEYS[10], account_id)
    else
      redis.call('SREM', KEYS[10], account_id)
    end
    -- Cached tokens move with their remaining TTL (RENAME keeps it), so the upgrade does not make every
    -- account fetch a new token from Trackunit at once; an expired one is simply gone.
    for i = n_fixed + 1, n_fixed + 2 * n_tokens, 2 do
      if redis.call('EXISTS', KEYS[i]) == 1 then
        redis.call('RENAME', KEYS[i], KEYS[i + 1])
        redis.call('SADD', KEYS[8], KEYS[i + 1])
        moved_tokens = moved_tokens + 1
      end
    end
    outcome = 1
  else
    redis.call('DEL', KEYS[1])
    outcome = 2
  end
end

-- What is left of the legacy record: tokens not moved, failure markers and locks (transient), the cache
-- set, the verification claim, the index and revoked entries.
for i = n_fixed + 1, n_fixed + 2 * n_tokens, 2 do redis.call('DEL', KEYS[i]) end
for i = n_fixed + 2 * n_tokens + 1, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], account_id)
redis.call('SREM', KEYS[5], account_id)
-- Every worker's memory cache forgets what it knew of the account.
if outcome == 1 then redis.call('PUBLISH', ARGV[2], account_id) end
return {outcome, moved_tokens}
