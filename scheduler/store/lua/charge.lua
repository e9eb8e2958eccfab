-- Charge every given RUNNING job for GPU time up to now (usage accrues while jobs run), or
-- up to what its nodes have shown: a job is charged no further than its nodes' last
-- heartbeat (a silent node shows nothing; the time is charged when it speaks again, or given
-- back at the run's end as its runner recorded it).
-- KEYS[1] usage hash  KEYS[2] epoch  KEYS[3..] job hashes
-- ARGV[1] epoch  ARGV[2] now  ARGV[3..] each job's limit, in KEYS' order ('' = now)
-- Returns the total billed units added, as a string.
if not fenced(KEYS[2], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local now = tonumber(ARGV[2])
local total = 0
for i = 3, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == STATE.RUNNING then
    total = total + charge(KEYS[i], KEYS[1], math.min(now, tonumber(ARGV[i]) or now))
  end
end
return tostring(total)
