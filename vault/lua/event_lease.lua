-- Take or keep an endpoint's delivery lease: one consumer delivers to an endpoint at a time.
-- Returns 1 if `consumer` holds it now (for ttl_ms more), 0 if another does.
-- ttl_ms 0 gives it up, if `consumer` holds it (compare and delete in one step: never another's).
-- KEYS: lease
-- ARGV: consumer, ttl_ms
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then
    redis.call('DEL', KEYS[1])
    return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
