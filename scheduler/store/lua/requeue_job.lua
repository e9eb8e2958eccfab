-- A person requeues a job (`labq requeue`, Slurm's `scontrol requeue`): a running one is
-- stopped and queued again (as a preemption is, without counting one); its usage so far stays
-- charged. An ended job stays ended (nothing leaves an end): submit it again.
-- KEYS[1] job hash
-- ARGV[1] job id  ARGV[2] caller  ARGV[3] caller is admin ('1'/'')  ARGV[4] now
-- Returns NO_SUCH_JOB, FORBIDDEN, NOT_ACTIVE (it waits already), ALREADY_STOPPING,
-- ALREADY_DONE or STOPPING.
local fields = redis.call('HMGET', KEYS[1], 'state', 'user', 'stop_request')
local state, owner = fields[1], fields[2]
if not state then return OUTCOME.NO_SUCH_JOB end
if owner ~= ARGV[2] and ARGV[3] ~= '1' then return OUTCOME.FORBIDDEN end
if is_waiting(state) then return OUTCOME.NOT_ACTIVE end
if holds_gpus(state) then
  if (fields[3] or '') ~= '' then return OUTCOME.ALREADY_STOPPING end
  redis.call('HSET', KEYS[1], 'state', STATE.PREEMPTED, 'stop_request', STATE.PREEMPTED,
    'stop_requested_at', ARGV[4], 'stop_reason', REASON.Requeued, 'reason', REASON.Requeued)
  return OUTCOME.STOPPING
end
return OUTCOME.ALREADY_DONE
