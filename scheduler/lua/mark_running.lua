-- STARTING -> RUNNING once Ray runs the job; charging starts here.
-- KEYS[1] job hash  KEYS[2] epoch
-- ARGV[1] epoch  ARGV[2] now
-- Returns 'OK', STALE_EPOCH or NOT_STARTING.
if not fenced(KEYS[2], ARGV[1]) then return 'STALE_EPOCH' end
if redis.call('HGET', KEYS[1], 'state') ~= 'STARTING' then return 'NOT_STARTING' end
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'started_at', ARGV[2], 'charged_until', ARGV[2])
return 'OK'
