-- Store a new managed API key (its record, named by the key's digest) and index it by name; announce it.
-- Returns 1 (stored) or 0 (the name is taken; nothing written).
-- KEYS: index, record
-- ARGV: name, digest, channel, message, ...fields
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
hset_pairs(KEYS[2], ARGV, 5)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
