-- Write a managed API key's "last used" time, unless the key was revoked meanwhile (never re-create it).
-- KEYS: record
-- ARGV: field, now
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
