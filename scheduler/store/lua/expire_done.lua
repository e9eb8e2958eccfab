-- Retention (leader only): finished jobs leave the hot store. Each leaves a compact record, one
-- field of the history hash of the UTC day it ended (that hash expires a while after the day),
-- and its job hash goes, with any captured-output key an older version left.
-- A job moves only if it is still in the done zset with the score (end time) the caller read,
-- so a pass never races a job's end. One not terminal (it does not belong in done) only
-- leaves the done zset.
-- KEYS[1] epoch  KEYS[2] done zset  KEYS[3] stored-jobs hash (the user's count goes down)
-- then per job, 3 keys: its job hash, its day's history hash, its legacy log key
-- ARGV[1] epoch  then per job, 3 values: job id, its done score, the history hash's expire-at
-- Returns how many jobs left the done zset, or OUTCOME.STALE_EPOCH.
if not fenced(KEYS[1], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local fields = {'id', 'user', 'account', 'state', 'gpus', 'gpu_type', 'qos', 'node',
  'gpu_indices', 'submitted_at', 'started_at', 'ended_at', 'billed', 'gpu_seconds', 'exit_code',
  'reason', 'restarts'}
local moved = 0
for i = 0, (#KEYS - 3) / 3 - 1 do
  local job_key, day_key, log_key = KEYS[4 + 3 * i], KEYS[5 + 3 * i], KEYS[6 + 3 * i]
  local id, score, expire_at = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  local current = redis.call('ZSCORE', KEYS[2], id)
  if current and tonumber(current) == tonumber(score) then
    local values = redis.call('HMGET', job_key, unpack(fields))
    if values[4] and is_terminal(values[4]) then
      local record = {}
      for k, name in ipairs(fields) do
        if values[k] and values[k] ~= '' then record[name] = values[k] end
      end
      redis.call('HSET', day_key, id, cjson.encode(record))
      redis.call('EXPIREAT', day_key, expire_at)
      local size = redis.call('HSTRLEN', job_key, 'command') + redis.call('HSTRLEN', job_key, 'env')
        + redis.call('HSTRLEN', job_key, 'script')
      redis.call('DEL', job_key, log_key)
      if values[2] then
        if redis.call('HINCRBY', KEYS[3], values[2], -1) <= 0 then
          redis.call('HDEL', KEYS[3], values[2])
        end
        if redis.call('HINCRBY', KEYS[3], 'bytes|' .. values[2], -size) <= 0 then
          redis.call('HDEL', KEYS[3], 'bytes|' .. values[2])
        end
      end
    end
    redis.call('ZREM', KEYS[2], id)
    moved = moved + 1
  end
end
return moved
