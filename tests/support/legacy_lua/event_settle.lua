-- Settle one delivery attempt of an event to an endpoint, and acknowledge its stream entry.
-- outcome 'delivered': forgotten, and the account's next waiting event becomes due.
-- outcome 'retry': scheduled at `due` (failed attempts so far = `failures`); the account is held back by it.
-- outcome 'failed': out of retries; kept in the failed set (the newest failed_kept), the next one is due.
-- KEYS: retry, attempts, owners, held, failed, waiting, events
-- ARGV: group, event_id, account_id, outcome, due, failures, now, failed_kept
local id, account = ARGV[2], ARGV[3]
if ARGV[4] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[5], id)
  redis.call('HSET', KEYS[2], id, ARGV[6])
  redis.call('HSET', KEYS[3], id, account)
  if not redis.call('HGET', KEYS[4], account) then redis.call('HSET', KEYS[4], account, id) end
else
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if ARGV[4] == 'failed' then
    redis.call('ZADD', KEYS[5], ARGV[7], id)
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[8]) - 1)
  end
  release_next(KEYS[1], KEYS[3], KEYS[4], KEYS[6], account, id, ARGV[7])
end
redis.call('XACK', KEYS[7], ARGV[1], id)
return 1
