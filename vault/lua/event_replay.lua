-- Deliver events to an endpoint again (an operator's replay): due now, attempts from zero, not failed.
-- A replayed event does not wait behind the account's undelivered one (it is a deliberate repeat).
-- KEYS: retry, attempts, owners, failed
-- ARGV: now, ...pairs
-- `pairs`: event id, account id, ...
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('ZREM', KEYS[4], ARGV[i])
end
return (#ARGV - 1) / 2
