-- Add the legacy (single-Redis layout) counts of events ever appended to one group's counts and drop
-- the legacy hash, in one step: the totals the metrics report never go down, and never count twice.
-- The single Redis only: it touches keys of both layouts, all of them declared here.
-- KEYS: legacy_counts, counts
-- ARGV:
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do redis.call('HINCRBY', KEYS[2], counts[i], counts[i + 1]) end
redis.call('DEL', KEYS[1])
return #counts / 2
