-- Read only (`labq history` of one user or account): which of some ended jobs in the hot
-- store are that user's and that account's, so only theirs travel back to be read.
-- KEYS[1..n] job hashes
-- ARGV[1] user ('' = any)  ARGV[2] account ('' = any)
-- Returns the positions (1..n) in KEYS of the jobs that match, in order.
local out = {}
for i = 1, #KEYS do
  local owner = redis.call('HMGET', KEYS[i], 'user', 'account')
  if (ARGV[1] == '' or owner[1] == ARGV[1]) and (ARGV[2] == '' or owner[2] == ARGV[2]) then
    out[#out + 1] = i
  end
end
return out
