-- An agent's heartbeat: store the node report; a DOWN node that reports again is UP.
-- KEYS[1] node hash  KEYS[2] nodes set
-- ARGV[1] node name  ARGV[2] now  ARGV[3] gpus_total  ARGV[4] gpu model  ARGV[5] gpus JSON
-- ARGV[6] simulated ('1'/'')  ARGV[7] hostname  ARGV[8] address (IP its peers reach it at)
-- ARGV[9] CPUs jobs may use  ARGV[10] memory in MiB (both '0' or absent: not reported)
-- Returns the node state after the heartbeat.
-- A report older than the one stored, by less than STEP_BACK_S, is one the agent made
-- before it: its client tried it again, or the network delivered it late (a connection the
-- client gave up on, retransmitted once a cut link came back). It changes nothing: it would
-- put the node's last heartbeat back in time, and the coordinator would take the node for
-- lost. (Older by more: the agent's clock was set back; the report is taken.)
local STEP_BACK_S = 30
local last = tonumber(redis.call('HGET', KEYS[1], 'last_heartbeat') or '')
local stamp = tonumber(ARGV[2])
if last and stamp < last and last - stamp < STEP_BACK_S then
  return redis.call('HGET', KEYS[1], 'state') == NODE.UP and NODE.UP or NODE.DOWN
end
-- (A node that reports is UP: whatever was there before, DOWN or a value nobody declared.)
local state = NODE.UP
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'state', state, 'last_heartbeat', ARGV[2],
  'gpus_total', ARGV[3], 'gpu_model', ARGV[4], 'gpus', ARGV[5], 'simulated', ARGV[6],
  'hostname', ARGV[7], 'address', ARGV[8] or '', 'cpus', ARGV[9] or '0',
  'memory_mb', ARGV[10] or '0')
redis.call('SADD', KEYS[2], ARGV[1])
return state
