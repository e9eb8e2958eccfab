-- PENDING (or budget-HELD) -> STARTING: allocate exactly the given GPU indices of a node to a job.
-- KEYS[1] job hash  KEYS[2] waiting zset  KEYS[3] active set  KEYS[4] node hash
-- KEYS[5] node alloc hash  KEYS[6] epoch  KEYS[7] stats hash  KEYS[8] node runs hash
-- KEYS[9] node wake list
-- ARGV[1] epoch  ARGV[2] job id  ARGV[3] node name  ARGV[4] indices (JSON list)
-- ARGV[5] now  ARGV[6] billing weight of the node's GPU model
-- ARGV[7] admission wait histogram bounds in seconds, ascending, comma-separated
-- ARGV[8] the start record for the node's agent (noderun.StartRecord JSON): written in the same
-- step as the allocation, so a job is never STARTING without its node being told.
-- Counts the admission (admissions|{account}) and its wait since the submit or the last
-- requeue (wait|{account}|{le} for the first bound >= the wait, else +Inf; wait_sum|{account}).
-- Returns 'OK' or why not: STALE_EPOCH, NOT_PENDING, NODE_NOT_UP, WRONG_COUNT (also for a
-- repeated index), GPU_OUT_OF_RANGE, GPU_BUSY
if not fenced(KEYS[6], ARGV[1]) then return 'STALE_EPOCH' end
local current = redis.call('HMGET', KEYS[1], 'state', 'hold')
-- HELD without a person's hold means a budget held it; the policy found it fits again.
if not (current[1] == 'PENDING' or (current[1] == 'HELD' and (current[2] or '') == '')) then
  return 'NOT_PENDING'
end
if redis.call('HGET', KEYS[4], 'state') ~= 'UP' then return 'NODE_NOT_UP' end
local total = tonumber(redis.call('HGET', KEYS[4], 'gpus_total') or '0')
local indices = cjson.decode(ARGV[4])
if #indices ~= tonumber(redis.call('HGET', KEYS[1], 'gpus')) then return 'WRONG_COUNT' end
local seen = {}
for _, idx in ipairs(indices) do
  if idx < 0 or idx >= total or idx % 1 ~= 0 then return 'GPU_OUT_OF_RANGE' end
  if seen[idx] then return 'WRONG_COUNT' end
  seen[idx] = true
  if redis.call('HEXISTS', KEYS[5], tostring(idx)) == 1 then return 'GPU_BUSY' end
end
for _, idx in ipairs(indices) do redis.call('HSET', KEYS[5], tostring(idx), ARGV[2]) end
redis.call('HSET', KEYS[1], 'state', 'STARTING', 'node', ARGV[3], 'gpu_indices', ARGV[4],
  'starting_at', ARGV[5], 'billing_weight', ARGV[6], 'reason', '', 'reasons', '[]',
  'est_start', '')
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[8], ARGV[2], ARGV[8])
redis.call('LPUSH', KEYS[9], ARGV[2])
redis.call('LTRIM', KEYS[9], 0, 99)
local info = redis.call('HMGET', KEYS[1], 'account', 'queued_at', 'submitted_at')
local account = info[1] or ''
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
return 'OK'
