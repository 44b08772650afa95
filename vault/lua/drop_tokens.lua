-- Forget an account's cached tokens (its credentials stay), and claim its verification for a while.
-- Returns 0 (not installed), 1 (dropped; the caller verifies now) or 2 (dropped; verified moments ago).
-- KEYS: account, cache, verifying
-- ARGV: account_id, channel, verify_interval
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
forget_tokens(KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[1])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return 1 end
return 2
