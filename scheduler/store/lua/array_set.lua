-- Change an array's record (cancel or hold its remaining indices, cancel one unmade task):
-- compare-and-set on the remaining indices the caller read, after checking who asks.
-- KEYS[1] array hash  KEYS[2] arrays set  KEYS[3] done zset  KEYS[4] a task's job hash (used
-- only with ARGV[6])  KEYS[5] stats hash: the owner's waiting count follows the indices that
-- wait (see array_waiting)
-- ARGV[1] array id  ARGV[2] caller  ARGV[3] caller is admin ('1'/'')  ARGV[4] remaining as read
-- ARGV[5] the array's fields to set (JSON)  ARGV[6] the task's fields (JSON, '' = none)
-- ARGV[7] the task's id  ARGV[8] now
-- Returns NO_SUCH_JOB, FORBIDDEN, STALE_VIEW or OK.
local fields = redis.call('HMGET', KEYS[1], 'user', 'remaining', 'state')
if not fields[1] then return OUTCOME.NO_SUCH_JOB end
if fields[1] ~= ARGV[2] and ARGV[3] ~= '1' then return OUTCOME.FORBIDDEN end
if (fields[2] or '') ~= ARGV[4] then return OUTCOME.STALE_VIEW end
local args = {}
for name, value in pairs(cjson.decode(ARGV[5])) do
  args[#args + 1] = name
  args[#args + 1] = value
end
if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
local after = redis.call('HMGET', KEYS[1], 'remaining', 'state', 'hold')
add_waiting(KEYS[5], fields[1],
  array_waiting(after[1], after[2]) - array_waiting(fields[2], fields[3]))
if (after[1] or '') == '' or after[2] ~= ARRAY_STATE.PENDING then
  redis.call('SREM', KEYS[2], ARGV[1])
else
  redis.call('SADD', KEYS[2], ARGV[1])
end
if ARGV[6] ~= '' then
  if redis.call('EXISTS', KEYS[4]) == 1 then return OUTCOME.STALE_VIEW end
  local targs = {}
  for name, value in pairs(cjson.decode(ARGV[6])) do
    targs[#targs + 1] = name
    targs[#targs + 1] = value
  end
  redis.call('HSET', KEYS[4], unpack(targs))
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[7])
end
return OUTCOME.OK
