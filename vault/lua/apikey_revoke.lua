-- Remove a managed API key (record and index entry) and announce it, so every worker forgets it.
-- `digest` is what the caller read from the index; if the name now names another record, nothing is done.
-- Returns 1 (revoked) or 0 (no such name, or it changed meanwhile).
-- KEYS: index, record
-- ARGV: name, digest, channel, message
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
