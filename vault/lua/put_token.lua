-- Cache a token (or a shared failure) of one slot, unless the account changed since `generation`.
-- A token proves the credentials work: a revoked account becomes active (account.reactivated), the first
-- token of newly stored credentials announces account.verified with the granted scope, and the change
-- is announced on the channel.
-- KEYS: account, cache, slot_key, revoked, events, event_counts, event_last, event_trimmed
-- ARGV: generation, value, ttl_ms, is_token, now, account_id, channel, scope, retain_after, retain_max, event_group, event_groups
if redis.call('HGET', KEYS[1], FIELD.generation) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[3])
if ARGV[4] == '1' then
  local app = redis.call('HGET', KEYS[1], FIELD.app)
  local box = outbox_of(KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12])
  if redis.call('HDEL', KEYS[1], FIELD.unverified) == 1 then
    emit(box, EVENT.verified, ARGV[6], app, {'scope', ARGV[8]})
  end
  if activate(KEYS[1], KEYS[4], ARGV[6], ARGV[5]) then
    emit(box, EVENT.reactivated, ARGV[6], app, {})
  end
  redis.call('PUBLISH', ARGV[7], ARGV[6])
end
return 1
