-- A new event for an endpoint whose account has an undelivered earlier one: it waits behind it, in
-- order, and leaves the stream group (acknowledged) in the same step. Returns 1 if deferred, 0 if the
-- account is free (the caller delivers it now; the entry stays pending until settled).
-- KEYS: held, waiting, events
-- ARGV: group, event_id, account_id
local blocker = redis.call('HGET', KEYS[1], ARGV[3])
if not blocker or blocker == ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return 1
