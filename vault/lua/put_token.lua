-- Cache a token (or a shared failure) of one slot, unless the account changed since `generation`.
-- A token proves the credentials work: a revoked account becomes active, and the change is announced.
-- KEYS: account, cache, slot_key, revoked
-- ARGV: generation, value, ttl_ms, is_token, now, account_id, channel
if redis.call('HGET', KEYS[1], FIELD.generation) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[3])
if ARGV[4] == '1' then
  activate(KEYS[1], KEYS[4], ARGV[6], ARGV[5])
  redis.call('PUBLISH', ARGV[7], ARGV[6])
end
return 1
