-- Count every user's waiting jobs from scratch (waiting|{user} in the stats hash, see
-- add_waiting), once per store: a store written by a labq that did not keep the count gets it
-- here, when a leader is first elected; the scripts keep it exact from then on.
-- KEYS[1] waiting zset  KEYS[2] held zset  KEYS[3] arrays set (arrays with indices left)
-- KEYS[4] stats hash
-- ARGV[1] a job hash key without its id  ARGV[2] an array hash key without its id
-- Returns how many users wait, or -1 when the count was there already.
if redis.call('HGET', KEYS[4], 'waiting_counted') == '1' then return -1 end
local counts = {}
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    local user = redis.call('HGET', ARGV[1] .. id, 'user')
    if user then counts[user] = (counts[user] or 0) + 1 end
  end
end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local a = redis.call('HMGET', ARGV[2] .. id, 'user', 'remaining', 'state')
  if a[1] then counts[a[1]] = (counts[a[1]] or 0) + array_waiting(a[2], a[3]) end
end
local old = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[4])) do
  if string.sub(name, 1, 8) == 'waiting|' then old[#old + 1] = name end
end
if #old > 0 then redis.call('HDEL', KEYS[4], unpack(old)) end
local users = 0
for user, n in pairs(counts) do
  redis.call('HSET', KEYS[4], 'waiting|' .. user, n)
  users = users + 1
end
redis.call('HSET', KEYS[4], 'waiting_counted', '1')
return users
