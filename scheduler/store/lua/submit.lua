-- Store new jobs as PENDING, all or none; a repeated token returns the first call's ids.
-- KEYS[1] waiting zset   KEYS[2] submit token key   KEYS[3..] one job hash per job
-- KEYS[#KEYS - 2] stored-jobs hash (user -> how many of their jobs the store keeps; bytes|user
--   -> the bytes of their commands, environments and scripts in it)
-- KEYS[#KEYS - 1] stats hash (waiting|user: their waiting jobs, see add_waiting)
-- KEYS[#KEYS] active set (read for the live-jobs cap only)
-- ARGV[1] token ttl (s)  ARGV[2] job count  ARGV[3] each owner's pending cap (0 = none)
-- ARGV[4], ARGV[5] each owner's stored caps, jobs and bytes (0 = none; see over_stored_cap)
-- ARGV[6] the owner's live-jobs cap (0 = none; see over_live_cap)  ARGV[7] job key prefix
--   then per job: id, submitted_at, the job's hash fields as one JSON object
-- Returns the list of job ids, or the error PENDING_CAP <has>, STORED_CAP jobs|bytes <has> or
-- JOB_CAP <has> (nothing stored).
local seen = redis.call('GET', KEYS[2])
if seen then return cjson.decode(seen) end
local count = tonumber(ARGV[2])
for i = 1, count do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then
    return redis.error_reply('DUPLICATE job key ' .. KEYS[2 + i])
  end
end
local stored, stats, active = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
local jobs, adding, bytes = {}, {}, {}
for i = 1, count do
  local job = cjson.decode(ARGV[3 * i + 7])
  jobs[i] = job
  adding[job['user']] = (adding[job['user']] or 0) + 1
  bytes[job['user']] = (bytes[job['user']] or 0) + job_bytes(job)
end
for user, n in pairs(adding) do
  local over = over_pending_cap(stats, user, n, tonumber(ARGV[3]))
    or over_stored_cap(stored, user, n, bytes[user], tonumber(ARGV[4]), tonumber(ARGV[5]))
    or over_live_cap(stats, active, ARGV[7], user, n, tonumber(ARGV[6]))
  if over then return redis.error_reply(over) end
end
local ids = {}
for i = 1, count do
  local pos = 3 * i + 5
  local id, score, job = ARGV[pos], ARGV[pos + 1], jobs[i]
  local args = {}
  for name, value in pairs(job) do
    args[#args + 1] = name
    args[#args + 1] = value
  end
  redis.call('HSET', KEYS[2 + i], unpack(args))
  redis.call('HINCRBY', stored, job['user'], 1)
  add_waiting(stats, job['user'], 1)
  redis.call('HINCRBY', stored, 'bytes|' .. job['user'], job_bytes(job))
  redis.call('ZADD', KEYS[1], score, id)
  ids[#ids + 1] = id
end
redis.call('SET', KEYS[2], cjson.encode(ids), 'EX', ARGV[1])
return ids
