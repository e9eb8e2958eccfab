-- Record why waiting jobs wait, and whether they are PENDING or HELD (a budget holds them);
-- a job that left the queue meanwhile, or that a person put on hold, is left alone.
-- KEYS[1..n] job hashes
-- ARGV: per job, reason code, reasons JSON, state (PENDING or HELD) and estimated start
-- ('' = none): 4 values per key
-- Returns how many jobs were updated.
local updated = 0
for i = 1, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'state', 'hold')
  local state, hold = fields[1], fields[2]
  if is_waiting(state) and (not hold or hold == '') then
    redis.call('HSET', KEYS[i], 'reason', ARGV[4 * i - 3], 'reasons', ARGV[4 * i - 2],
      'state', ARGV[4 * i - 1], 'est_start', ARGV[4 * i])
    updated = updated + 1
  end
end
return updated
