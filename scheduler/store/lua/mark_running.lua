-- STARTING -> RUNNING once Ray runs the job; charging starts here. A job preempted while it
-- was STARTING stays PREEMPTED but gets its start time, so its run is charged too.
-- KEYS[1] job hash  KEYS[2] epoch
-- ARGV[1] epoch  ARGV[2] now
-- Returns 'OK', STALE_EPOCH or NOT_STARTING.
if not fenced(KEYS[2], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local fields = redis.call('HMGET', KEYS[1], 'state', 'started_at')
if fields[1] == STATE.PREEMPTED and (fields[2] or '') == '' then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2], 'charged_until', ARGV[2])
  return OUTCOME.OK
end
if fields[1] ~= STATE.STARTING then return OUTCOME.NOT_STARTING end
redis.call('HSET', KEYS[1], 'state', STATE.RUNNING, 'started_at', ARGV[2], 'charged_until', ARGV[2])
return OUTCOME.OK
