-- Mark an active job to be stopped for a reason (TIMEOUT, PREEMPTED, CANCELLED); the first
-- reason wins. A preempted job shows PREEMPTED until Ray has stopped it and it is queued again.
-- Counts the decision once: preemptions|{account}, or an eviction (TimeLimit for TIMEOUT, or
-- the given end reason, e.g. IdleGpu).
-- KEYS[1] job hash  KEYS[2] epoch  KEYS[3] stats hash
-- ARGV[1] epoch  ARGV[2] stop request (PREEMPTED or the terminal state to end in)  ARGV[3] now
-- ARGV[4] the end reason to record ('' = the state's usual one: TimeLimit, Cancelled)
-- Returns 'OK', STALE_EPOCH, NOT_ACTIVE or ALREADY_STOPPING.
if not fenced(KEYS[2], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= STATE.STARTING and state ~= STATE.RUNNING then return OUTCOME.NOT_ACTIVE end
local current = redis.call('HGET', KEYS[1], 'stop_request')
if current and current ~= '' then return OUTCOME.ALREADY_STOPPING end
redis.call('HSET', KEYS[1], 'stop_request', ARGV[2], 'stop_requested_at', ARGV[3],
  'stop_reason', ARGV[4])
local account = redis.call('HGET', KEYS[1], 'account') or ''
if ARGV[2] == STATE.PREEMPTED then
  redis.call('HSET', KEYS[1], 'state', STATE.PREEMPTED, 'reason', REASON.Preempted)
  redis.call('HINCRBY', KEYS[3], 'preemptions|' .. account, 1)
elseif ARGV[4] ~= '' then
  count_eviction(KEYS[3], account, ARGV[4])
elseif ARGV[2] == STATE.TIMEOUT then
  count_eviction(KEYS[3], account, REASON.TimeLimit)
end
return OUTCOME.OK
