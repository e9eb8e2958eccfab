-- Write account/user configuration if nobody changed it since the caller read it.
-- KEYS[1] version  KEYS[2] accounts hash  KEYS[3] users hash  KEYS[4] budgets hash
-- ARGV[1] the version the caller read
-- ARGV[2..]: triples of ('account'|'user'|'budget', name, JSON or '' to delete)
-- Returns the new version, or -1 if the version moved (read again and retry).
if (tonumber(redis.call('GET', KEYS[1]) or '0')) ~= tonumber(ARGV[1]) then return -1 end
for i = 2, #ARGV, 3 do
  local hash = KEYS[2]
  if ARGV[i] == 'user' then hash = KEYS[3] end
  if ARGV[i] == 'budget' then hash = KEYS[4] end
  if ARGV[i + 2] == '' then
    redis.call('HDEL', hash, ARGV[i + 1])
  else
    redis.call('HSET', hash, ARGV[i + 1], ARGV[i + 2])
  end
end
return redis.call('INCR', KEYS[1])
