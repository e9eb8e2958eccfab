-- Store new jobs as PENDING, all or none; a repeated token returns the first call's ids.
-- KEYS[1] waiting zset   KEYS[2] submit token key   KEYS[3..] one job hash per job
-- ARGV[1] token ttl (s)  ARGV[2] job count
--   then per job: id, submitted_at, field count F, F pairs of field, value
-- Returns the list of job ids.
local seen = redis.call('GET', KEYS[2])
if seen then return cjson.decode(seen) end
local count = tonumber(ARGV[2])
for i = 1, count do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then
    return redis.error_reply('DUPLICATE job key ' .. KEYS[2 + i])
  end
end
local pos = 3
local ids = {}
for i = 1, count do
  local id, score, nfields = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  pos = pos + 3
  local args = {}
  for j = 0, 2 * nfields - 1 do args[#args + 1] = ARGV[pos + j] end
  pos = pos + 2 * nfields
  redis.call('HSET', KEYS[2 + i], unpack(args))
  redis.call('ZADD', KEYS[1], score, id)
  ids[#ids + 1] = id
end
redis.call('SET', KEYS[2], cjson.encode(ids), 'EX', ARGV[1])
return ids
