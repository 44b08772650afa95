-- The account lifecycle's shared steps, put before every script (after the FIELD and STATUS names).

-- The sealed credentials of an account hash: the legacy one-field form if present, else the pieces joined.
local function sealed_of(account)
  local legacy = redis.call('HGET', account, FIELD.legacy_cred)
  if legacy then return legacy end
  local parts, n = {}, 0
  while true do
    local part = redis.call('HGET', account, FIELD.cred_piece .. n)
    if not part then break end
    parts[#parts + 1] = part
    n = n + 1
  end
  if n == 0 then return false end
  return table.concat(parts)
end

-- Every cached token and failure of the account, with the set that lists them.
local function forget_tokens(cache)
  for _, key in ipairs(redis.call('SMEMBERS', cache)) do redis.call('DEL', key) end
  redis.call('DEL', cache)
end

-- Revoked -> active: a token was fetched with the account's credentials after all.
local function activate(account, revoked, account_id, now)
  if redis.call('HGET', account, FIELD.status) == STATUS.active then return end
  redis.call('HSET', account, FIELD.status, STATUS.active, FIELD.updated, now)
  redis.call('HDEL', account, FIELD.revoked_until)
  redis.call('SREM', revoked, account_id)
end

-- Field, value pairs into a hash, one HSET each: unpack() of a long list would overflow Lua's stack.
local function hset_pairs(key, list, first)
  for i = first, #list, 2 do redis.call('HSET', key, list[i], list[i + 1]) end
end
