-- PENDING (or budget-HELD) -> STARTING: allocate exactly the given GPU indices of a node to a job.
-- KEYS[1] job hash  KEYS[2] waiting zset  KEYS[3] active set  KEYS[4] node hash
-- KEYS[5] node alloc hash  KEYS[6] epoch  KEYS[7] stats hash  KEYS[8] node runs hash
-- KEYS[9] node wake list  KEYS[10] drains hash (an admin's drains, by node name)
-- ARGV[1] epoch  ARGV[2] job id  ARGV[3] node name  ARGV[4] indices (JSON list)
-- ARGV[5] now  ARGV[6] billing weight of the node's GPU model
-- ARGV[7] admission wait histogram bounds in seconds, ascending, comma-separated
-- ARGV[8] the start record for the node's agent (noderun.StartRecord JSON): written in the same
-- step as the allocation, so a job is never STARTING without its node being told.
-- A job of K nodes: ARGV[9] its parts as JSON ([[node, [indices]], ...], head first; '' for one
-- node), and for each other node, by rank, 4 more KEYS after KEYS[10] (node hash, alloc hash,
-- runs hash, wake list) and 3 more ARGV (node name, indices JSON, its start record): all K
-- nodes are checked, then allocated and told, in this one step (NOT_DISTINCT: a node named
-- twice).
-- It waits no more (waiting|{user}, see add_waiting).
-- Counts the admission (admissions|{account}) and its wait since the submit or the last
-- requeue (wait|{account}|{le} for the first bound >= the wait, else +Inf; wait_sum|{account}).
-- Returns 'OK' or why not: STALE_EPOCH, NOT_PENDING, NODE_NOT_UP, WRONG_COUNT (also for a
-- repeated index), GPU_OUT_OF_RANGE, GPU_BUSY
if not fenced(KEYS[6], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local current = redis.call('HMGET', KEYS[1], 'state', 'hold')
-- HELD without a person's hold means a budget held it; the policy found it fits again.
if not (is_waiting(current[1]) and (current[1] == STATE.PENDING or (current[2] or '') == '')) then
  return OUTCOME.NOT_PENDING
end
-- Each node: {node hash, alloc hash, runs hash, wake list, name, indices JSON, record}.
local nodes = {{KEYS[4], KEYS[5], KEYS[8], KEYS[9], ARGV[3], ARGV[4], ARGV[8]}}
local others = (#KEYS - 10) / 4
for i = 1, others do
  local k, a = 10 + (i - 1) * 4, 9 + (i - 1) * 3
  nodes[#nodes + 1] = {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3]}
end
local count = tonumber(redis.call('HGET', KEYS[1], 'nodes') or '') or 1
if count ~= #nodes then return OUTCOME.WRONG_COUNT end
local per = tonumber(redis.call('HGET', KEYS[1], 'gpus')) / count
local names = {}
for _, n in ipairs(nodes) do
  if names[n[5]] then return OUTCOME.NOT_DISTINCT end
  names[n[5]] = true
  -- Down, or an admin drained it: the drains hash says so, never the node hash (its agent
  -- writes that one; drained_* fields an earlier labq left there are not read).
  local state = redis.call('HGET', n[1], 'state')
  if state ~= NODE.UP or redis.call('HEXISTS', KEYS[10], n[5]) == 1 then
    return OUTCOME.NODE_NOT_UP
  end
  local total = tonumber(redis.call('HGET', n[1], 'gpus_total') or '0')
  local indices = cjson.decode(n[6])
  if #indices ~= per then return OUTCOME.WRONG_COUNT end
  local seen = {}
  for _, idx in ipairs(indices) do
    if idx < 0 or idx >= total or idx % 1 ~= 0 then return OUTCOME.GPU_OUT_OF_RANGE end
    if seen[idx] then return OUTCOME.WRONG_COUNT end
    seen[idx] = true
    if redis.call('HEXISTS', n[2], tostring(idx)) == 1 then return OUTCOME.GPU_BUSY end
  end
end
for _, n in ipairs(nodes) do
  for _, idx in ipairs(cjson.decode(n[6])) do redis.call('HSET', n[2], tostring(idx), ARGV[2]) end
end
local parts = ARGV[9] or ''
if parts == '' then parts = '[]' end
redis.call('HSET', KEYS[1], 'state', STATE.STARTING, 'node', ARGV[3], 'gpu_indices', ARGV[4],
  'starting_at', ARGV[5], 'billing_weight', ARGV[6], 'reason', '', 'reasons', '[]',
  'est_start', '', 'parts', parts)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
for _, n in ipairs(nodes) do
  redis.call('HSET', n[3], ARGV[2], n[7])
  redis.call('LPUSH', n[4], ARGV[2])
  redis.call('LTRIM', n[4], 0, 99)
end
local info = redis.call('HMGET', KEYS[1], 'account', 'queued_at', 'submitted_at', 'user')
local account = info[1] or ''
add_waiting(KEYS[7], info[4], -1)
local now = tonumber(ARGV[5])
local since = tonumber(info[2] or '') or tonumber(info[3] or '') or now
local wait = math.max(0, now - since)
local le = '+Inf'
for bound in string.gmatch(ARGV[7], '[^,]+') do
  if wait <= tonumber(bound) then le = bound; break end
end
redis.call('HINCRBY', KEYS[7], 'admissions|' .. account, 1)
redis.call('HINCRBY', KEYS[7], 'wait|' .. account .. '|' .. le, 1)
redis.call('HINCRBYFLOAT', KEYS[7], 'wait_sum|' .. account, wait)
return OUTCOME.OK
