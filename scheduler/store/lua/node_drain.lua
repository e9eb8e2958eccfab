-- An admin drains a node: jobs running there go on to their end, no new job starts there.
-- The drain (who, why, when) is the node's field of the drains hash, a key only the
-- coordinator may write: the node hash is its agent's (its ACL user writes it), so a drain
-- kept there could be lifted or forged from the node. The heartbeat never touches the drains
-- hash, so a drain outlives heartbeats and agent restarts.
-- KEYS[1] node hash  KEYS[2] nodes set  KEYS[3] node alloc hash  KEYS[4] coordinator wake list
-- KEYS[5] drains hash
-- ARGV[1] node name  ARGV[2] who (the admin)  ARGV[3] reason  ARGV[4] now
-- Returns {outcome, GPUs still allocated there}: OK (drained now), ALREADY (it was drained:
-- who and why are the new ones, since when is kept) or NO_SUCH_NODE.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  return {OUTCOME.NO_SUCH_NODE, 0}
end
-- An earlier labq kept the drain in the node hash: those fields are never read; gone.
redis.call('HDEL', KEYS[1], 'drained_by', 'drain_reason', 'drained_at')
local outcome, at = OUTCOME.OK, tonumber(ARGV[4])
local old = redis.call('HGET', KEYS[5], ARGV[1])
if old then
  outcome = OUTCOME.ALREADY
  local ok, was = pcall(cjson.decode, old)
  if ok and type(was) == 'table' and tonumber(was.at) then at = tonumber(was.at) end
end
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode({by = ARGV[2], reason = ARGV[3], at = at}))
-- The leader explains its waiting jobs again (their reason names the drain).
redis.call('LPUSH', KEYS[4], 'node')
redis.call('LTRIM', KEYS[4], 0, 99)
return {outcome, redis.call('HLEN', KEYS[3])}
