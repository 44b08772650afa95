-- Tie an identity token id (jti) to the one message it carried, for the token's life.
-- Returns 1 if the binding now holds this message (new, or the same message again), 0 if another.
-- KEYS: binding
-- ARGV: message_digest, ttl
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
