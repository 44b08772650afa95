-- Replace a sealed token, only if it is still what was read, keeping its remaining TTL
-- (time does not move inside a script, so PTTL then SET PX is exact).
-- KEYS: token
-- ARGV: sealed, new_sealed
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
