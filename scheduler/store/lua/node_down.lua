-- Mark a node DOWN if its last heartbeat is older than the cutoff; it then gets no new jobs.
-- The time is the one in the node's own hash, which only that node's agent may write: no
-- agent can keep another node alive.
-- KEYS[1] node hash  KEYS[2] epoch
-- ARGV[1] epoch  ARGV[2] node name  ARGV[3] cutoff time
-- Returns DOWN (newly marked), ALIVE, ALREADY_DOWN or STALE_EPOCH.
if not fenced(KEYS[2], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local state = redis.call('HGET', KEYS[1], 'state')
if state == NODE.DOWN then return OUTCOME.ALREADY_DOWN end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_heartbeat') or '0')
if last >= tonumber(ARGV[3]) then return OUTCOME.ALIVE end
redis.call('HSET', KEYS[1], 'state', NODE.DOWN)
return OUTCOME.DOWN
