-- STARTING|RUNNING|PREEMPTED -> a terminal state: final charge, free the GPUs (once), record the end.
-- KEYS[1] job hash  KEYS[2] active set  KEYS[3] done zset  KEYS[4] node alloc hash
-- KEYS[5] usage hash  KEYS[6] epoch  KEYS[7] stats hash
-- KEYS[8..11] the node's runs, stops, status hashes and wake list (see release_run)
-- KEYS[12] stored-jobs hash
-- ARGV[1] epoch  ARGV[2] job id  ARGV[3] final state  ARGV[4] exit code ('' = none)
-- ARGV[5] reason  ARGV[6] now (when the run ended, as its node recorded it)
-- ARGV[7] the node the caller read for the job: its alloc hash is KEYS[4]
-- ARGV[8] a multi-node job's other nodes as the caller read them (JSON list, by rank; '' =
-- none), with 5 KEYS each from KEYS[13] (see release_others): all are freed and released.
-- ARGV[9] charge up to this instead of ARGV[6] ('' = ARGV[6]): a lost node's last heartbeat
-- ARGV[10] CPU seconds and ARGV[11] peak memory bytes its run used, as its node measured
-- ('' = not measured): kept on the job, for `labq eff` and the history.
-- An ended job keeps no environment or script (they may hold secrets, and cost memory).
-- Ending with reason NodeLost counts an eviction (unless a stop was already asked: counted then).
-- Returns 'OK', STALE_VIEW (the job moved: read it again), STALE_EPOCH, ALREADY_DONE or NOT_ACTIVE.
if not fenced(KEYS[6], ARGV[1]) then return OUTCOME.STALE_EPOCH end
local state = redis.call('HGET', KEYS[1], 'state')
if is_terminal(state) then return OUTCOME.ALREADY_DONE end
if not holds_gpus(state) then return OUTCOME.NOT_ACTIVE end
if (redis.call('HGET', KEYS[1], 'node') or '') ~= ARGV[7] then return OUTCOME.STALE_VIEW end
if others_stale(KEYS[1], 13, ARGV[8]) then return OUTCOME.STALE_VIEW end
local now = tonumber(ARGV[6])
local info = redis.call('HMGET', KEYS[1], 'account', 'stop_request')
if ARGV[5] == REASON.NodeLost and (info[2] or '') == '' then
  count_eviction(KEYS[7], info[1] or '', REASON.NodeLost)
end
charge(KEYS[1], KEYS[5], tonumber(ARGV[9]) or now, true)
free_gpus(KEYS[1], KEYS[4], ARGV[2])
release_others(KEYS[1], ARGV[2], 13)
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'ended_at', ARGV[6], 'exit_code', ARGV[4],
  'reason', ARGV[5], 'reasons', '[]')
count_ended(KEYS[7], ARGV[3], ARGV[5], info[1] or '')
if (ARGV[10] or '') ~= '' then redis.call('HSET', KEYS[1], 'cpu_seconds', ARGV[10]) end
if (ARGV[11] or '') ~= '' then redis.call('HSET', KEYS[1], 'memory_peak_bytes', ARGV[11]) end
drop_request(KEYS[1], KEYS[12])
if state == STATE.STARTING then redis.call('HSET', KEYS[1], 'started_at', '') end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[2])
release_run(KEYS[8], KEYS[9], KEYS[10], KEYS[11], ARGV[2])
return OUTCOME.OK
