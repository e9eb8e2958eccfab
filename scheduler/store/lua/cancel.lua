-- A user's cancel: a waiting job ends CANCELLED at once; a running one is marked for stopping
-- (the leader stops it on Ray, then finishes it CANCELLED and frees its GPUs).
-- KEYS[1] job hash  KEYS[2] waiting zset  KEYS[3] done zset  KEYS[4] held zset
-- KEYS[5] stored-jobs hash  KEYS[6] stats hash (the ended-jobs counter, waiting|{user})
-- ARGV[1] job id  ARGV[2] caller  ARGV[3] caller is admin ('1'/'')  ARGV[4] now
-- ARGV[5] the end reason of a waiting job ('' = Cancelled; e.g. DependencyNeverSatisfied)
-- Returns NO_SUCH_JOB, FORBIDDEN, ALREADY_DONE, CANCELLED or STOPPING.
local fields = redis.call('HMGET', KEYS[1], 'state', 'user', 'account')
local state, owner = fields[1], fields[2]
if not state then return OUTCOME.NO_SUCH_JOB end
if owner ~= ARGV[2] and ARGV[3] ~= '1' then return OUTCOME.FORBIDDEN end
if is_terminal(state) then return OUTCOME.ALREADY_DONE end
if is_waiting(state) then
  local why = ARGV[5]
  if not why or why == '' then why = REASON.Cancelled end
  redis.call('HSET', KEYS[1], 'state', STATE.CANCELLED, 'ended_at', ARGV[4], 'reason', why,
    'reasons', '[]')
  count_ended(KEYS[6], STATE.CANCELLED, why, fields[3] or '')
  add_waiting(KEYS[6], owner, -1)
  drop_request(KEYS[1], KEYS[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  return OUTCOME.CANCELLED
end
local current = redis.call('HGET', KEYS[1], 'stop_request')
-- A cancel overrides a preemption: the job then ends CANCELLED instead of being queued again.
if not current or current == '' or current == STATE.PREEMPTED then
  redis.call('HSET', KEYS[1], 'stop_request', STATE.CANCELLED, 'stop_requested_at', ARGV[4],
    'stop_reason', '')
end
return OUTCOME.STOPPING
