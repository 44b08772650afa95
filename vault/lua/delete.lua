-- Remove every trace of an account. Returns 1 if it was installed (then it announces account.deleted).
-- KEYS: account, cache, index, revoked, verifying, events, event_counts, event_last, event_trimmed
-- ARGV: account_id, channel, via, retain_after, retain_max, event_group, event_groups
local existed = redis.call('EXISTS', KEYS[1])
local app = redis.call('HGET', KEYS[1], FIELD.app)
forget_tokens(KEYS[2])
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
if existed == 1 then emit(outbox_of(KEYS[6], KEYS[7], KEYS[8], KEYS[9], ARGV[4], ARGV[5], ARGV[6], ARGV[7]), EVENT.deleted, ARGV[1], app or '', {'via', ARGV[3]}) end
return existed
