-- Store (or replace) an account's credentials and drop its cached tokens.
-- Returns -1 (stale: the identity was issued before the stored credentials' one; nothing written),
-- 0 (a new account) or 1 (replaced). The hash is written afresh, keeping only `installed` and the
-- newest `iat`, so no piece or mark of an earlier install survives.
-- Announces account.installed (new) or account.reinstalled, and account.reactivated when it was revoked.
-- KEYS: account, cache, index, revoked, generation, events, event_counts, event_last, event_trimmed
-- ARGV: app, now, account_id, channel, iat, retain_after, retain_max, event_group, event_groups, ...pieces
local n_fixed = 9
if #ARGV < n_fixed + 2 or (#ARGV - n_fixed) % 2 ~= 0 then
  return redis.error_reply('install: expected field, value pairs')
end
local stored_iat = redis.call('HGET', KEYS[1], FIELD.iat)
if ARGV[5] ~= '' and stored_iat and tonumber(ARGV[5]) < tonumber(stored_iat) then return -1 end
local iat = stored_iat
if ARGV[5] ~= '' then iat = ARGV[5] end
local existed = redis.call('EXISTS', KEYS[1])
local installed = redis.call('HGET', KEYS[1], FIELD.installed) or ARGV[2]
local was_revoked = redis.call('HGET', KEYS[1], FIELD.status) == STATUS.revoked
forget_tokens(KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], FIELD.app, ARGV[1], FIELD.status, STATUS.active, FIELD.installed, installed,
           FIELD.updated, ARGV[2], FIELD.generation, redis.call('INCR', KEYS[5]), FIELD.unverified, '1')
if iat then redis.call('HSET', KEYS[1], FIELD.iat, iat) end
hset_pairs(KEYS[1], ARGV, n_fixed + 1)
redis.call('ZADD', KEYS[3], 0, ARGV[3])
redis.call('SREM', KEYS[4], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
local box = outbox_of(KEYS[6], KEYS[7], KEYS[8], KEYS[9], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if existed == 1 then
  emit(box, EVENT.reinstalled, ARGV[3], ARGV[1], {'installed_at', installed, 'updated_at', ARGV[2]})
  if was_revoked then emit(box, EVENT.reactivated, ARGV[3], ARGV[1], {}) end
else
  emit(box, EVENT.installed, ARGV[3], ARGV[1], {'installed_at', installed})
end
return existed
