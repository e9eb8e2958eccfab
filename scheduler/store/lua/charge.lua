-- Charge every given RUNNING job for GPU time up to now (usage accrues while jobs run).
-- KEYS[1] usage hash  KEYS[2] epoch  KEYS[3..] job hashes
-- ARGV[1] epoch  ARGV[2] now
-- Returns the total billed units added, as a string.
if not fenced(KEYS[2], ARGV[1]) then return 'STALE_EPOCH' end
local now = tonumber(ARGV[2])
local total = 0
for i = 3, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == STATE.RUNNING then
    total = total + charge(KEYS[i], KEYS[1], now)
  end
end
return tostring(total)
