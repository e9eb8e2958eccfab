-- Record running jobs' idle-GPU state as the leader's idle check computed it (scheduler.idle):
-- per job, GPU index -> since when it stayed below the threshold, and whether the owner was told.
-- A job that is no longer RUNNING is left alone.
-- KEYS[1] epoch  KEYS[2..] job hashes
-- ARGV[1] epoch, then per job: gpu_idle_since JSON object, idle_notified ('1'/'')
-- Returns how many jobs were updated, or STALE_EPOCH.
if not fenced(KEYS[1], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local updated = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == STATE.RUNNING then
    redis.call('HSET', KEYS[i], 'gpu_idle_since', ARGV[2 * i - 2], 'idle_notified', ARGV[2 * i - 1])
    updated = updated + 1
  end
end
return updated
