-- Store a new array: one record with its template and remaining indices (no task yet: the
-- leader makes tasks as they near their turn, see spawn_tasks.lua). A repeated token returns
-- the first call's id.
-- KEYS[1] array hash  KEYS[2] arrays set (arrays with indices left)  KEYS[3] submit token key
-- KEYS[4] every array by submit time (retention)  KEYS[5] stored-jobs hash  KEYS[6] stats hash
-- KEYS[7] active set (read for the live-jobs cap only)
-- ARGV[4] how many tasks (each counts as a stored job of its user, and a waiting one)
-- ARGV[5] the owner's pending cap (0 = none): past it, the error PENDING_CAP <has>
-- ARGV[6], ARGV[7] the owner's stored caps, jobs and bytes (0 = none): past one, the error
--   STORED_CAP jobs|bytes <has> (the array's command, environment and script count once)
-- ARGV[8] the owner's live-jobs cap (0 = none): past it, the error JOB_CAP <has>
-- ARGV[9] job key prefix
-- ARGV[1] token ttl (s)  ARGV[2] array id  ARGV[3] the array hash's fields as one JSON object
-- Returns the list {array id}.
local seen = redis.call('GET', KEYS[3])
if seen then return cjson.decode(seen) end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('DUPLICATE array key ' .. KEYS[1])
end
local record = cjson.decode(ARGV[3])
local template = cjson.decode(record['template'])
local tasks = tonumber(ARGV[4])
local size = job_bytes({command = template['command'], env = template['env'],
                        script = record['script']})
local over = over_pending_cap(KEYS[6], record['user'], tasks, tonumber(ARGV[5]))
  or over_stored_cap(KEYS[5], record['user'], tasks, size, tonumber(ARGV[6]), tonumber(ARGV[7]))
  or over_live_cap(KEYS[6], KEYS[7], ARGV[9], record['user'], tasks, tonumber(ARGV[8]))
if over then return redis.error_reply(over) end
local args = {}
for name, value in pairs(record) do
  args[#args + 1] = name
  args[#args + 1] = value
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[5], record['user'], tasks)
add_waiting(KEYS[6], record['user'], tasks)
redis.call('HINCRBY', KEYS[5], 'bytes|' .. record['user'], size)
redis.call('ZADD', KEYS[4], record['submitted_at'], ARGV[2])
local ids = {ARGV[2]}
redis.call('SET', KEYS[3], cjson.encode(ids), 'EX', ARGV[1])
return ids
