-- Take or renew the leader lease. A new holder bumps the fencing epoch.
-- KEYS[1] leader  KEYS[2] epoch
-- ARGV[1] this coordinator's id  ARGV[2] ttl in milliseconds
-- ARGV[3] '1' after a store failover: the holder renews under a new epoch
-- Returns the epoch this coordinator leads under, or 0 if another one leads.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if ARGV[3] == '1' then return redis.call('INCR', KEYS[2]) end
  return tonumber(redis.call('GET', KEYS[2]))
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
