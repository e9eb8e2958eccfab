-- The leader makes the next tasks of an array: PENDING jobs from the array's template, taken
-- from its remaining indices (compare-and-set on the remaining text the leader read).
-- KEYS[1] array hash  KEYS[2] waiting zset  KEYS[3] arrays set  KEYS[4] epoch
-- KEYS[5..] one job hash per task
-- ARGV[1] epoch  ARGV[2] array id  ARGV[3] remaining as read  ARGV[4] remaining after
-- ARGV[5] the template's fields (JSON)  then per task: job id, index
-- Returns OK, STALE_EPOCH, STALE_VIEW (the array changed: read it again) or NOT_PENDING.
if not fenced(KEYS[4], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local fields = redis.call('HMGET', KEYS[1], 'remaining', 'state', 'hold', 'submitted_at')
if fields[2] ~= ARRAY_STATE.PENDING or (fields[3] or '') ~= '' then return OUTCOME.NOT_PENDING end
if (fields[1] or '') ~= ARGV[3] then return OUTCOME.STALE_VIEW end
local template = cjson.decode(ARGV[5])
for i = 5, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return OUTCOME.STALE_VIEW end
end
for i = 5, #KEYS do
  local pos = 6 + 2 * (i - 5)
  template['id'] = ARGV[pos]
  template['array_task'] = ARGV[pos + 1]
  local args = {}
  for name, value in pairs(template) do
    args[#args + 1] = name
    args[#args + 1] = value
  end
  redis.call('HSET', KEYS[i], unpack(args))
  redis.call('ZADD', KEYS[2], fields[4], ARGV[pos])
end
redis.call('HSET', KEYS[1], 'remaining', ARGV[4])
if ARGV[4] == '' then
  redis.call('HSET', KEYS[1], 'state', ARRAY_STATE.SPAWNED)
  redis.call('SREM', KEYS[3], ARGV[2])
end
return OUTCOME.OK
