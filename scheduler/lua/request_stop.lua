-- Mark an active job to be stopped for a reason (TIMEOUT, PREEMPTED); the first reason wins.
-- A preempted job shows PREEMPTED until Ray has stopped it and it is queued again.
-- KEYS[1] job hash  KEYS[2] epoch
-- ARGV[1] epoch  ARGV[2] stop reason (a terminal state)  ARGV[3] now
-- Returns 'OK', STALE_EPOCH, NOT_ACTIVE or ALREADY_STOPPING.
if not fenced(KEYS[2], ARGV[1]) then return 'STALE_EPOCH' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'STARTING' and state ~= 'RUNNING' then return 'NOT_ACTIVE' end
local current = redis.call('HGET', KEYS[1], 'stop_request')
if current and current ~= '' then return 'ALREADY_STOPPING' end
redis.call('HSET', KEYS[1], 'stop_request', ARGV[2], 'stop_requested_at', ARGV[3])
if ARGV[2] == 'PREEMPTED' then
  redis.call('HSET', KEYS[1], 'state', 'PREEMPTED', 'reason', 'Preempted')
end
return 'OK'
