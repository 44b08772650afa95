-- Move a managed key's record from its digest under an older vault key to its digest under the current one.
-- Done on first use after a VAULT_KEY rotation (the service has the presented key then, and only then).
-- Returns 1 (moved) or 0 (the index no longer names the old digest: revoked or moved meanwhile).
-- KEYS: index, old_record, new_record
-- ARGV: name, old_digest, new_digest, kid_field, kid, channel, message
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('RENAME', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
