-- An admin removes a retired node: it leaves the cluster (`labq nodes`, /metrics, alerts).
-- Refused while its agent still reports (it would join again at once: stop the agent first)
-- and while it holds jobs (drain it and let them end, or cancel them). A removed node whose
-- agent reports again later joins again, as a new node (not drained: its drain goes too).
-- KEYS[1] node hash  KEYS[2] nodes set  KEYS[3] alloc hash  KEYS[4] runs hash
-- KEYS[5] stops hash  KEYS[6] status hash  KEYS[7] the node's wake list  KEYS[8] drains hash
-- ARGV[1] node name  ARGV[2] cutoff: a heartbeat at or after it is an agent still reporting
-- Returns {outcome, detail}: {'OK', ''}, {'NO_SUCH_NODE', ''}, {'ALIVE', last heartbeat} or
-- {'HOLDS_JOBS', job ids, comma-separated}.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return {OUTCOME.NO_SUCH_NODE, ''} end
local last = redis.call('HGET', KEYS[1], 'last_heartbeat') or '0'
if tonumber(last) >= tonumber(ARGV[2]) then return {OUTCOME.ALIVE, last} end
local jobs, seen = {}, {}
local function add(job_id)
  if not seen[job_id] then seen[job_id] = true; table.insert(jobs, job_id) end
end
for _, job_id in ipairs(redis.call('HVALS', KEYS[3])) do add(job_id) end  -- GPUs it holds
for _, job_id in ipairs(redis.call('HKEYS', KEYS[4])) do add(job_id) end  -- runs it was given
if #jobs > 0 then
  table.sort(jobs)
  return {OUTCOME.HOLDS_JOBS, table.concat(jobs, ',')}
end
-- (DEL of the node hash takes any drained_* fields an earlier labq kept there, too.)
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('HDEL', KEYS[8], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return {OUTCOME.OK, ''}
