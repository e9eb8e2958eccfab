-- Shared helpers, prepended to every script by store.py (Lua has no imports in Redis).

-- is_terminal(state), holds_gpus(state) and is_waiting(state) come before this file, generated
-- from scheduler.model's lifecycle (store.py prepends them).

local function fenced(epoch_key, epoch)
  return redis.call('GET', epoch_key) == epoch
end

-- Add to an association's decayed usage: decay what it had to `now` (half-life from the usage
-- hash's 'half_life_s' field, 7 days by default), then add.
local function add_decayed(usage_key, assoc, amount, now)
  local half_life = tonumber(redis.call('HGET', usage_key, 'half_life_s') or '') or 604800
  local fields = redis.call('HMGET', usage_key, 'decayed:' .. assoc, 'decayed_t:' .. assoc)
  local value = tonumber(fields[1]) or 0
  local since = tonumber(fields[2]) or now
  if now > since then value = value * math.pow(2, -(now - since) / half_life) end
  redis.call('HSET', usage_key, 'decayed:' .. assoc, value + amount,
    'decayed_t:' .. assoc, math.max(now, since))
end

-- Charge a RUNNING job for GPU time since charged_until: GPU-seconds and billed units
-- (GPU-seconds x the billing weight fixed at start), per job, user and account, and the
-- association's decayed usage that fair share reads. `settle` (the end of a run, at the time
-- its node's runner recorded): charged_until moves to `now` either way, so time charged past
-- the run's real end (while its node was silent) is given back; never before it started.
local function charge(job_key, usage_key, now, settle)
  local fields = redis.call('HMGET', job_key, 'charged_until', 'gpus', 'billing_weight', 'user', 'account', 'started_at')
  local since = tonumber(fields[1])
  if not since then return 0 end
  if settle then now = math.max(now, tonumber(fields[6]) or now) end
  if now == since or (now < since and not settle) then return 0 end
  local gpu_s = (now - since) * tonumber(fields[2])
  local billed = gpu_s * (tonumber(fields[3]) or 1)
  redis.call('HINCRBYFLOAT', usage_key, 'user:' .. fields[4] .. ':gpu_s', gpu_s)
  redis.call('HINCRBYFLOAT', usage_key, 'user:' .. fields[4] .. ':billed', billed)
  redis.call('HINCRBYFLOAT', usage_key, 'account:' .. fields[5] .. ':gpu_s', gpu_s)
  redis.call('HINCRBYFLOAT', usage_key, 'account:' .. fields[5] .. ':billed', billed)
  add_decayed(usage_key, fields[5] .. '|' .. fields[4], billed, now)
  -- per UTC day, for budgets over any period
  local day = math.floor(now / 86400) .. ':' .. fields[5] .. '|' .. fields[4]
  redis.call('HINCRBYFLOAT', usage_key, 'day:' .. day, billed)
  redis.call('HINCRBYFLOAT', usage_key, 'dgpu:' .. day, gpu_s)
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

-- Persisted metric counters live in the stats hash (keys.py documents its fields), written by
-- the same script that makes the transition they count, so they survive restarts and leader
-- changes and count each transition once.
local function count_eviction(stats_key, account, reason)
  redis.call('HINCRBY', stats_key, 'evictions|' .. account .. '|' .. reason, 1)
end

-- A user's waiting jobs (PENDING or HELD, and an array's indices not made tasks yet) in the
-- stats hash (waiting|{user}), kept exact by every script that moves a job into or out of
-- waiting, so that the per-user pending cap is checked in the same step that adds jobs
-- (submit, submit_array) whichever coordinator's API takes them.
local function add_waiting(stats_key, user, n)
  if n ~= 0 and user and user ~= '' then
    redis.call('HINCRBY', stats_key, 'waiting|' .. user, n)
  end
end

-- How many of an array's indices wait to be made tasks: its `remaining` ranges text
-- ("1,3,5-7") while the array is PENDING, else none.
local function array_waiting(remaining, state)
  if state ~= ARRAY_STATE.PENDING then return 0 end
  local n = 0
  for item in string.gmatch(remaining or '', '[^,]+') do
    local first, last = string.match(item, '^(%d+)-(%d+)$')
    if first then n = n + tonumber(last) - tonumber(first) + 1 else n = n + 1 end
  end
  return n
end

-- The pending cap: refuse (an error reply 'PENDING_CAP <has>') adding `adding` waiting jobs
-- for `user` past `cap` (0 = no cap).
local function over_pending_cap(stats_key, user, adding, cap)
  if not cap or cap <= 0 then return nil end
  local has = tonumber(redis.call('HGET', stats_key, 'waiting|' .. user) or '0') or 0
  if has + adding > cap then return 'PENDING_CAP ' .. has end
  return nil
end

-- A user's own cap on live jobs (an accounts file's max_jobs): refuse (an error reply
-- 'JOB_CAP <has>') adding `adding` jobs for `user` past `cap` waiting (the exact count in
-- the stats hash) and active jobs (read from the active set: the jobs started and not ended,
-- no more than the cluster has room for) together (0 = no cap).
local function over_live_cap(stats_key, active_key, job_prefix, user, adding, cap)
  if not cap or cap <= 0 then return nil end
  local has = tonumber(redis.call('HGET', stats_key, 'waiting|' .. user) or '0') or 0
  for _, id in ipairs(redis.call('SMEMBERS', active_key)) do
    if redis.call('HGET', job_prefix .. id, 'user') == user then has = has + 1 end
  end
  if has + adding > cap then return 'JOB_CAP ' .. has end
  return nil
end

-- The stored caps: refuse (an error reply 'STORED_CAP jobs <has>' or 'STORED_CAP bytes <has>')
-- adding `jobs` jobs whose commands, environments and scripts take `bytes` bytes for `user`
-- past `job_cap` jobs or `byte_cap` bytes kept in the stored-jobs hash (0 = no cap).
local function over_stored_cap(stored_key, user, jobs, bytes, job_cap, byte_cap)
  if job_cap and job_cap > 0 then
    local has = tonumber(redis.call('HGET', stored_key, user) or '0') or 0
    if has + jobs > job_cap then return 'STORED_CAP jobs ' .. has end
  end
  if byte_cap and byte_cap > 0 then
    local has = tonumber(redis.call('HGET', stored_key, 'bytes|' .. user) or '0') or 0
    if has + bytes > byte_cap then return 'STORED_CAP bytes ' .. has end
  end
  return nil
end

-- The bytes a job keeps in the store for the stored caps: its command, environment and script.
local function job_bytes(fields)
  return string.len(fields['command'] or '') + string.len(fields['env'] or '')
    + string.len(fields['script'] or '')
end

-- A job ended (a terminal state, once): counted per state, reason code and account, for the
-- ended-jobs counter. The code is the reason's first word ("NonZeroExitCode 3" counts as
-- NonZeroExitCode), so a free-text reason never makes a series of its own.
local function count_ended(stats_key, state, reason, account)
  local code = string.match(reason or '', '^[%w_]+') or 'None'
  redis.call('HINCRBY', stats_key, 'ended|' .. state .. '|' .. code .. '|' .. account, 1)
end

-- A job leaves its node's hands: forget its start record, stop request and reported status,
-- and wake the agent so it cleans up (and kills the attempt if it still runs).
local function release_run(runs_key, stops_key, status_key, wake_key, job_id)
  redis.call('HDEL', runs_key, job_id)
  redis.call('HDEL', stops_key, job_id)
  redis.call('HDEL', status_key, job_id)
  redis.call('LPUSH', wake_key, job_id)
  redis.call('LTRIM', wake_key, 0, 99)
end

-- An ended job keeps no environment or script (they may hold secrets, and cost memory): drop
-- them and take their bytes off the user's count in the stored-jobs hash.
local function drop_request(job_key, stored_key)
  local user = redis.call('HGET', job_key, 'user') or ''
  local size = redis.call('HSTRLEN', job_key, 'env') + redis.call('HSTRLEN', job_key, 'script')
  redis.call('HSET', job_key, 'env', '{}', 'script', '')
  if stored_key and user ~= '' then
    redis.call('HINCRBY', stored_key, 'bytes|' .. user, 2 - size)
  end
end

-- A multi-node job's other nodes (its parts after the head, by rank): KEYS from `first` on,
-- 5 per node (alloc hash, runs, stops, status hashes, wake list). `stale(job_key, first,
-- names)`: whether the caller read other nodes than the job holds now (names: JSON list of
-- the other nodes' names as read). `release_others`: free their GPUs (entries that still
-- name the job) and release their runs, so their agents stop what runs there.
local function job_parts(job_key)
  local text = redis.call('HGET', job_key, 'parts') or ''
  if text == '' then return {} end
  return cjson.decode(text)
end

local function others_stale(job_key, first, names_json)
  local parts = job_parts(job_key)
  local names = cjson.decode(names_json ~= nil and names_json ~= '' and names_json or '[]')
  local held = math.max(#parts - 1, 0)
  if held ~= #names or (#KEYS - first + 1) ~= 5 * held then return true end
  for i = 1, held do
    if parts[i + 1][1] ~= names[i] then return true end
  end
  return false
end

local function release_others(job_key, job_id, first)
  local parts = job_parts(job_key)
  for i = 2, #parts do
    local base = first + (i - 2) * 5
    for _, idx in ipairs(parts[i][2]) do
      local field = tostring(idx)
      if redis.call('HGET', KEYS[base], field) == job_id then
        redis.call('HDEL', KEYS[base], field)
      end
    end
    release_run(KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], job_id)
  end
end
