-- A person requeues a job (`labq requeue`, Slurm's `scontrol requeue`): a running one is
-- stopped and queued again (as a preemption is, without counting one); an ended one waits
-- again from now. Its usage so far stays charged.
-- KEYS[1] job hash  KEYS[2] waiting zset  KEYS[3] done zset  KEYS[4] changed list
-- ARGV[1] job id  ARGV[2] caller  ARGV[3] caller is admin ('1'/'')  ARGV[4] now
-- Returns NO_SUCH_JOB, FORBIDDEN, NOT_ACTIVE (it waits already), ALREADY_STOPPING,
-- STOPPING or OK (queued again now).
local fields = redis.call('HMGET', KEYS[1], 'state', 'user', 'stop_request', 'submitted_at')
local state, owner = fields[1], fields[2]
if not state then return 'NO_SUCH_JOB' end
if owner ~= ARGV[2] and ARGV[3] ~= '1' then return 'FORBIDDEN' end
if is_waiting(state) then return 'NOT_ACTIVE' end
if holds_gpus(state) then
  if (fields[3] or '') ~= '' then return 'ALREADY_STOPPING' end
  redis.call('HSET', KEYS[1], 'state', 'PREEMPTED', 'stop_request', 'PREEMPTED',
    'stop_requested_at', ARGV[4], 'stop_reason', 'Requeued', 'reason', 'Requeued')
  return 'STOPPING'
end
redis.call('HSET', KEYS[1], 'state', 'PENDING', 'node', '', 'gpu_indices', '[]', 'started_at', '',
  'ended_at', '', 'exit_code', '', 'charged_until', '', 'stop_request', '', 'stop_reason', '',
  'reason', 'Requeued', 'reasons', cjson.encode({{code = 'Requeued',
  detail = 'requeued by ' .. ARGV[2]}}), 'queued_at', ARGV[4], 'gpu_idle_since', '{}',
  'idle_notified', '', 'hold', '')
redis.call('HINCRBY', KEYS[1], 'restarts', 1)
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], fields[4], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], 0, 9999)
return 'OK'
