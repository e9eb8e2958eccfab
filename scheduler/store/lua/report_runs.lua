-- A node agent reports the attempts it runs (the only job data an agent writes). A status is
-- kept only while the coordinator still assigns that attempt to the node: a late report of a
-- job that has already ended or moved is dropped. Statuses of runs no longer assigned are
-- removed. Wakes the leader when something changed.
-- KEYS[1] node runs hash  KEYS[2] node status hash  KEYS[3] coordinator wake list
-- ARGV: job id, attempt, status JSON, repeated
-- Returns how many statuses changed.
local changed = 0
for i = 1, #ARGV, 3 do
  local record = redis.call('HGET', KEYS[1], ARGV[i])
  if record and tonumber(cjson.decode(record)['attempt']) == tonumber(ARGV[i + 1]) then
    if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 2] then
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
      changed = changed + 1
    end
  end
end
for _, job_id in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], job_id) == 0 then redis.call('HDEL', KEYS[2], job_id) end
end
if changed > 0 then
  redis.call('LPUSH', KEYS[3], 'status')
  redis.call('LTRIM', KEYS[3], 0, 99)
end
return changed
