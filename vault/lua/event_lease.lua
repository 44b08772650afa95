-- Take or keep an endpoint's delivery lease: one consumer delivers to an endpoint at a time.
-- Returns 1 if `consumer` holds it now (for ttl_ms more), 0 if another does.
-- KEYS: lease
-- ARGV: consumer, ttl_ms
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
