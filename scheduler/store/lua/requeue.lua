-- STARTING|RUNNING|PREEMPTED -> PENDING (node lost, launch failed): charge, free the GPUs, queue again.
-- KEYS[1] job hash  KEYS[2] active set  KEYS[3] waiting zset  KEYS[4] node alloc hash
-- KEYS[5] usage hash  KEYS[6] epoch  KEYS[7] done zset  KEYS[8] stats hash
-- KEYS[9..12] the node's runs, stops, status hashes and wake list (see release_run)
-- KEYS[13] stored-jobs hash
-- ARGV[1] epoch  ARGV[2] job id  ARGV[3] reason  ARGV[4] now (when the attempt ended)
-- ARGV[7] charge up to this instead of ARGV[4] ('' = ARGV[4]): a lost node's last heartbeat
-- ARGV[5] the node the caller read for the job: its alloc hash is KEYS[4]
-- ARGV[6] a multi-node job's other nodes as the caller read them (JSON list, by rank; '' =
-- none), with 5 KEYS each from KEYS[14] (see release_others): all are freed and released.
-- A job a person cancelled, or that ran out of time, is not queued again: it ends in that state
-- (with the stop's recorded reason, e.g. IdleGpu). Requeued for NodeLost counts an eviction.
-- The requeued job waits from now (queued_at), and forgets its idle-GPU state.
-- Returns 'OK', ENDED (it ended instead), STALE_VIEW (the job moved: read it again),
-- STALE_EPOCH or NOT_ACTIVE.
if not fenced(KEYS[6], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local state = redis.call('HGET', KEYS[1], 'state')
if not holds_gpus(state) then return OUTCOME.NOT_ACTIVE end
if (redis.call('HGET', KEYS[1], 'node') or '') ~= ARGV[5] then return OUTCOME.STALE_VIEW end
if others_stale(KEYS[1], 14, ARGV[6]) then return OUTCOME.STALE_VIEW end
charge(KEYS[1], KEYS[5], tonumber(ARGV[7]) or tonumber(ARGV[4]), true)
free_gpus(KEYS[1], KEYS[4], ARGV[2])
release_run(KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[2])
release_others(KEYS[1], ARGV[2], 14)
local stop = redis.call('HGET', KEYS[1], 'stop_request') or ''
if stop == STATE.CANCELLED or stop == STATE.TIMEOUT then
  local why = redis.call('HGET', KEYS[1], 'stop_reason') or ''
  if why == '' then
    why = REASON.Cancelled
    if stop == STATE.TIMEOUT then why = REASON.TimeLimit end
  end
  redis.call('HSET', KEYS[1], 'state', stop, 'ended_at', ARGV[4], 'reason', why, 'reasons', '[]')
  count_ended(KEYS[8], stop, why, redis.call('HGET', KEYS[1], 'account') or '')
  drop_request(KEYS[1], KEYS[13])
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[7], ARGV[4], ARGV[2])
  return OUTCOME.ENDED
end
if ARGV[3] == REASON.NodeLost and stop == '' then
  count_eviction(KEYS[8], redis.call('HGET', KEYS[1], 'account') or '', REASON.NodeLost)
end
redis.call('HSET', KEYS[1], 'state', STATE.PENDING, 'node', '', 'gpu_indices', '[]', 'parts', '[]',
  'started_at', '',
  'charged_until', '', 'stop_request', '', 'stop_reason', '', 'reason', ARGV[3],
  'reasons', cjson.encode({{code = ARGV[3], detail = 'requeued after ' .. ARGV[3]}}),
  'queued_at', ARGV[4], 'gpu_idle_since', '{}', 'idle_notified', '')
redis.call('HINCRBY', KEYS[1], 'restarts', 1)
add_waiting(KEYS[8], redis.call('HGET', KEYS[1], 'user'), 1)
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'submitted_at'), ARGV[2])
return OUTCOME.OK
