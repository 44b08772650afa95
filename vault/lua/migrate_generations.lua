-- Raise every slot group's generation counter to at least the legacy (single-Redis layout) counter, so
-- no generation handed out before the upgrade is handed out again. Returns how many counters it raised.
-- The single Redis only: it touches keys of both layouts, all of them declared here.
-- KEYS: legacy_generation, ...generations
-- ARGV:
local legacy = redis.call('GET', KEYS[1])
if not legacy then return 0 end
local raised = 0
for i = 2, #KEYS do
  if tonumber(legacy) > tonumber(redis.call('GET', KEYS[i]) or '0') then
    redis.call('SET', KEYS[i], legacy)
    raised = raised + 1
  end
end
return raised
