-- Retention (leader only): finished jobs leave the hot store for the history. Each leaves a
-- compact record (what `labq history`, `labq eff` and `labq report` read: who, what ran where,
-- when, how it ended, what it cost and used; never its command, environment or script), one
-- field of the history hash of the UTC day it ended, and its id in that day's per-user and
-- per-account sets and in the id -> day index; all of them expire `history_s` after the day.
-- Its job hash goes, with any captured-output key an older version left.
-- A job moves only if it is still in the done zset with the score (end time) the caller read
-- and has the user and account the caller read (whose index keys it passed), so a pass never
-- races a job's end. One not terminal (it does not belong in done) only leaves the done zset.
-- KEYS[1] epoch  KEYS[2] done zset  KEYS[3] stored-jobs hash (the user's count goes down)
-- then per job, 6 keys: its job hash, its day's history hash, its legacy log key, its day's
-- user set, its day's account set, its id -> day index bucket
-- ARGV[1] epoch  then per job, 6 values: job id, its done score, the history keys' expire-at,
-- its user and account as the caller read them, its unix day
-- Returns how many jobs left the done zset, or OUTCOME.STALE_EPOCH.
if not fenced(KEYS[1], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local fields = HISTORY_FIELDS  -- generated from scheduler.store.records
local function expire_at_least(key, at)
  local now_at = redis.call('EXPIRETIME', key)
  if now_at < 0 or now_at < tonumber(at) then redis.call('EXPIREAT', key, at) end
end
local moved = 0
for i = 0, (#KEYS - 3) / 6 - 1 do
  local job_key, day_key, log_key = KEYS[4 + 6 * i], KEYS[5 + 6 * i], KEYS[6 + 6 * i]
  local user_key, account_key, where_key = KEYS[7 + 6 * i], KEYS[8 + 6 * i], KEYS[9 + 6 * i]
  local id, score, expire_at = ARGV[2 + 6 * i], ARGV[3 + 6 * i], ARGV[4 + 6 * i]
  local user, account, day = ARGV[5 + 6 * i], ARGV[6 + 6 * i], ARGV[7 + 6 * i]
  local current = redis.call('ZSCORE', KEYS[2], id)
  if current and tonumber(current) == tonumber(score) then
    local values = redis.call('HMGET', job_key, unpack(fields))
    local terminal = values[4] and is_terminal(values[4])
    if terminal and ((values[2] or '') ~= user or (values[3] or '') ~= account) then
      -- not as the caller read it: left for the next pass, which reads it again
    else
      if terminal then
        local record = {}
        for k, name in ipairs(fields) do
          if values[k] and values[k] ~= '' then record[name] = values[k] end
        end
        redis.call('HSET', day_key, id, cjson.encode(record))
        redis.call('EXPIREAT', day_key, expire_at)
        redis.call('SADD', user_key, id)
        redis.call('EXPIREAT', user_key, expire_at)
        redis.call('SADD', account_key, id)
        redis.call('EXPIREAT', account_key, expire_at)
        redis.call('HSET', where_key, id, day)
        expire_at_least(where_key, expire_at)
        local size = redis.call('HSTRLEN', job_key, 'command')
          + redis.call('HSTRLEN', job_key, 'env') + redis.call('HSTRLEN', job_key, 'script')
        redis.call('DEL', job_key, log_key)
        if user ~= '' then
          if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
            redis.call('HDEL', KEYS[3], user)
          end
          if redis.call('HINCRBY', KEYS[3], 'bytes|' .. user, -size) <= 0 then
            redis.call('HDEL', KEYS[3], 'bytes|' .. user)
          end
        end
      end
      redis.call('ZREM', KEYS[2], id)
      moved = moved + 1
    end
  end
end
return moved
