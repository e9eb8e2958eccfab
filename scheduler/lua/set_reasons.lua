-- Record why waiting jobs wait, and whether they are PENDING or HELD (a budget holds them);
-- a job that left the queue meanwhile, or that a person put on hold, is left alone.
-- KEYS[1..n] job hashes
-- ARGV: per job, reason code, reasons JSON and state (PENDING or HELD): 3 values per key
-- Returns how many jobs were updated.
local updated = 0
for i = 1, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'state', 'hold')
  local state, hold = fields[1], fields[2]
  if (state == 'PENDING' or state == 'HELD') and (not hold or hold == '') then
    redis.call('HSET', KEYS[i], 'reason', ARGV[3 * i - 2], 'reasons', ARGV[3 * i - 1],
      'state', ARGV[3 * i])
    updated = updated + 1
  end
end
return updated
