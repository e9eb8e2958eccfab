-- Shared helpers, prepended to every script by store.py (Lua has no imports in Redis).

local function is_terminal(state)
  return state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED' or state == 'TIMEOUT'
end

local function fenced(epoch_key, epoch)
  return redis.call('GET', epoch_key) == epoch
end

-- Charge a RUNNING job for GPU time since charged_until: GPU-seconds and billed units
-- (GPU-seconds x the billing weight fixed at start), per job, user and account.
local function charge(job_key, usage_key, now)
  local fields = redis.call('HMGET', job_key, 'charged_until', 'gpus', 'billing_weight', 'user', 'account')
  local since = tonumber(fields[1])
  if not since or now <= since then return 0 end
  local gpu_s = (now - since) * tonumber(fields[2])
  local billed = gpu_s * (tonumber(fields[3]) or 1)
  redis.call('HINCRBYFLOAT', usage_key, 'user:' .. fields[4] .. ':gpu_s', gpu_s)
  redis.call('HINCRBYFLOAT', usage_key, 'user:' .. fields[4] .. ':billed', billed)
  redis.call('HINCRBYFLOAT', usage_key, 'account:' .. fields[5] .. ':gpu_s', gpu_s)
  redis.call('HINCRBYFLOAT', usage_key, 'account:' .. fields[5] .. ':billed', billed)
  redis.call('HINCRBYFLOAT', job_key, 'gpu_seconds', gpu_s)
  redis.call('HINCRBYFLOAT', job_key, 'billed', billed)
  redis.call('HSET', job_key, 'charged_until', now)
  return billed
end

-- Release the GPUs a job holds: only entries that still name this job, so twice is harmless.
local function free_gpus(job_key, alloc_key, job_id)
  local indices = cjson.decode(redis.call('HGET', job_key, 'gpu_indices') or '[]')
  local freed = 0
  for _, idx in ipairs(indices) do
    local field = tostring(idx)
    if redis.call('HGET', alloc_key, field) == job_id then
      redis.call('HDEL', alloc_key, field)
      freed = freed + 1
    end
  end
  return freed
end
