-- Read some fields of many job hashes in one round trip (read-only: /metrics over big queues).
-- KEYS[1..n] job hashes
-- ARGV[1..m] field names
-- Returns n * m values, hash after hash, each in ARGV order (nil where a field is absent).
local out = {}
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, #ARGV do out[#out + 1] = values[j] end
end
return out
