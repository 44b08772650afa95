-- Active -> revoked (Trackunit refused the credentials), unless the account changed since `generation`.
-- A new generation: a fetch still in flight with the refused credentials cannot cache its token.
-- Announces account.revoked when the account was active (a failed probe of a revoked one says nothing new).
-- KEYS: account, cache, revoked, generation_counter, events, event_counts, event_last, event_trimmed
-- ARGV: generation, until, now, account_id, channel, retain_after, retain_max, event_group, event_groups
if redis.call('HGET', KEYS[1], FIELD.generation) ~= ARGV[1] then return 0 end
local was_active = redis.call('HGET', KEYS[1], FIELD.status) ~= STATUS.revoked
forget_tokens(KEYS[2])
redis.call('HSET', KEYS[1], FIELD.status, STATUS.revoked, FIELD.revoked_until, ARGV[2], FIELD.updated, ARGV[3],
           FIELD.generation, redis.call('INCR', KEYS[4]))
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
if was_active then
  emit(outbox_of(KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[6], ARGV[7], ARGV[8], ARGV[9]), EVENT.revoked, ARGV[4], redis.call('HGET', KEYS[1], FIELD.app),
       {'retry_after', tostring(math.max(1, tonumber(ARGV[2]) - tonumber(ARGV[3])))})
end
return 1
