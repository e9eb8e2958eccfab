-- Mark a node DOWN if its last heartbeat is older than the cutoff; it then gets no new jobs.
-- KEYS[1] node hash  KEYS[2] heartbeats zset  KEYS[3] epoch
-- ARGV[1] epoch  ARGV[2] node name  ARGV[3] cutoff time
-- Returns DOWN (newly marked), ALIVE, ALREADY_DOWN or STALE_EPOCH.
if not fenced(KEYS[3], ARGV[1]) then return 'STALE_EPOCH' end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'DOWN' then return 'ALREADY_DOWN' end
local last = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]) or '0')
if last >= tonumber(ARGV[3]) then return 'ALIVE' end
redis.call('HSET', KEYS[1], 'state', 'DOWN')
return 'DOWN'
