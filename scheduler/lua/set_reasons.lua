-- Record why waiting jobs wait; a job that left the queue meanwhile is left alone.
-- KEYS[1..n] job hashes
-- ARGV: per job, reason code and reasons JSON (2 values per key)
-- Returns how many jobs were updated.
local updated = 0
for i = 1, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state == 'PENDING' or state == 'HELD' then
    redis.call('HSET', KEYS[i], 'reason', ARGV[2 * i - 1], 'reasons', ARGV[2 * i])
    updated = updated + 1
  end
end
return updated
