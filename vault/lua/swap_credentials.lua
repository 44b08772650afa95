-- Replace an account's sealed credentials, only if they (and the app) are still what was read.
-- The hash is rebuilt, not patched: Redis never turns a hashtable back into a compact listpack, and a
-- one-field record (FIELD.legacy_cred) is a hashtable. No old piece or one-field value survives.
-- KEYS: account
-- ARGV: app, sealed, ...pieces
local n_fixed = 2
if #ARGV < n_fixed + 2 or (#ARGV - n_fixed) % 2 ~= 0 then
  return redis.error_reply('swap: expected field, value pairs')
end
if sealed_of(KEYS[1]) ~= ARGV[2] or redis.call('HGET', KEYS[1], FIELD.app) ~= ARGV[1] then return 0 end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
local prefix = FIELD.cred_piece
for i = 1, #all, 2 do
  if all[i] ~= FIELD.legacy_cred and string.sub(all[i], 1, #prefix) ~= prefix then
    redis.call('HSET', KEYS[1], all[i], all[i + 1])
  end
end
hset_pairs(KEYS[1], ARGV, n_fixed + 1)
return 1
