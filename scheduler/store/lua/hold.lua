-- Put a waiting job on hold (it leaves the queue the scheduler reads) or release it. A
-- release tells the leader through the changed list: it wrote the job's reason ("Released"),
-- which the leader writes again (held and released between two cycles, it never saw it go).
-- KEYS[1] job hash  KEYS[2] waiting zset  KEYS[3] held zset  KEYS[4] changed list
-- ARGV[1] job id  ARGV[2] caller  ARGV[3] caller is admin ('1'/'')  ARGV[4] 'hold'|'release'
-- ARGV[5] now: a released job waits from now (queued_at), so held time is not queue wait
-- Returns NO_SUCH_JOB, FORBIDDEN, NOT_WAITING, ALREADY, or OK.
local fields = redis.call('HMGET', KEYS[1], 'state', 'user', 'hold', 'submitted_at')
local state, owner, hold, submitted = fields[1], fields[2], fields[3] or '', fields[4]
if not state then return OUTCOME.NO_SUCH_JOB end
if owner ~= ARGV[2] and ARGV[3] ~= '1' then return OUTCOME.FORBIDDEN end
if not is_waiting(state) then return OUTCOME.NOT_WAITING end
if ARGV[4] == 'hold' then
  if hold ~= '' then return OUTCOME.ALREADY end
  local kind = HOLD.user
  local code = REASON.UserHold
  if ARGV[3] == '1' then kind = HOLD.admin; code = REASON.AdminHold end
  redis.call('HSET', KEYS[1], 'state', STATE.HELD, 'hold', kind, 'reason', code, 'reasons',
    cjson.encode({{code = code, detail = 'held by ' .. ARGV[2] .. '; `labq release` lets it run'}}))
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], submitted, ARGV[1])
  return OUTCOME.OK
end
if hold == '' then return OUTCOME.ALREADY end
if hold == HOLD.admin and ARGV[3] ~= '1' then return OUTCOME.FORBIDDEN end
redis.call('HSET', KEYS[1], 'state', STATE.PENDING, 'hold', '', 'reason', REASON.Released, 'reasons', '[]',
  'queued_at', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], submitted, ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], 0, 9999)
return OUTCOME.OK
