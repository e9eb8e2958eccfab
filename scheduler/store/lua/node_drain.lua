-- An admin drains a node: jobs running there go on to their end, no new job starts there.
-- The drain (who, why, when) lives in the node hash beside the agent's report; the heartbeat
-- writes only its own fields, so a drain outlives heartbeats and agent restarts.
-- KEYS[1] node hash  KEYS[2] nodes set  KEYS[3] node alloc hash  KEYS[4] coordinator wake list
-- ARGV[1] node name  ARGV[2] who (the admin)  ARGV[3] reason  ARGV[4] now
-- Returns {outcome, GPUs still allocated there}: OK (drained now), ALREADY (it was drained:
-- who and why are the new ones, since when is kept) or NO_SUCH_NODE.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  return {OUTCOME.NO_SUCH_NODE, 0}
end
local outcome = OUTCOME.OK
if (redis.call('HGET', KEYS[1], 'drained_by') or '') ~= '' then
  outcome = OUTCOME.ALREADY
  redis.call('HSET', KEYS[1], 'drained_by', ARGV[2], 'drain_reason', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'drained_by', ARGV[2], 'drain_reason', ARGV[3],
    'drained_at', ARGV[4])
end
-- The leader explains its waiting jobs again (their reason names the drain).
redis.call('LPUSH', KEYS[4], 'node')
redis.call('LTRIM', KEYS[4], 0, 99)
return {outcome, redis.call('HLEN', KEYS[3])}
