-- Active -> revoked (Trackunit refused the credentials), unless the account changed since `generation`.
-- A new generation: a fetch still in flight with the refused credentials cannot cache its token.
-- KEYS: account, cache, revoked, generation_counter
-- ARGV: generation, until, now, account_id, channel
if redis.call('HGET', KEYS[1], FIELD.generation) ~= ARGV[1] then return 0 end
forget_tokens(KEYS[2])
redis.call('HSET', KEYS[1], FIELD.status, STATUS.revoked, FIELD.revoked_until, ARGV[2], FIELD.updated, ARGV[3],
           FIELD.generation, redis.call('INCR', KEYS[4]))
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
