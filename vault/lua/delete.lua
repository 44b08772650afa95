-- Remove every trace of an account. Returns 1 if it was installed.
-- KEYS: account, cache, index, revoked, verifying
-- ARGV: account_id, channel
local existed = redis.call('EXISTS', KEYS[1])
forget_tokens(KEYS[2])
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return existed
