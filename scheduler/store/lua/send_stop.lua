-- Tell a job's node to stop it: the job's stop request goes to the node's stops hash, and the
-- agent is woken. The agent's runner then sends SIGTERM, waits stop_grace_s, and kills the rest.
-- KEYS[1] job hash  KEYS[2] node stops hash  KEYS[3] node wake list  KEYS[4] epoch
-- ARGV[1] epoch  ARGV[2] job id  ARGV[3] the node the caller read for the job
-- Returns 'OK', STALE_EPOCH, NOT_ACTIVE, NO_STOP (nothing asked) or STALE_VIEW (it moved).
if not fenced(KEYS[4], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local fields = redis.call('HMGET', KEYS[1], 'state', 'stop_request', 'node')
if not holds_gpus(fields[1]) then return OUTCOME.NOT_ACTIVE end
if (fields[2] or '') == '' then return OUTCOME.NO_STOP end
if (fields[3] or '') ~= ARGV[3] then return OUTCOME.STALE_VIEW end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= fields[2] then
  redis.call('HSET', KEYS[2], ARGV[2], fields[2])
  redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('LTRIM', KEYS[3], 0, 99)
end
return OUTCOME.OK
