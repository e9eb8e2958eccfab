-- An admin resumes a drained node: jobs may start there again.
-- KEYS[1] node hash  KEYS[2] nodes set  KEYS[3] coordinator wake list  KEYS[4] drains hash
-- ARGV[1] node name
-- Returns {outcome, who had drained it}: OK, NOT_DRAINED or NO_SUCH_NODE.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then
  return {OUTCOME.NO_SUCH_NODE, ''}
end
-- An earlier labq kept the drain in the node hash: those fields are never read; gone.
redis.call('HDEL', KEYS[1], 'drained_by', 'drain_reason', 'drained_at')
local drain = redis.call('HGET', KEYS[4], ARGV[1])
if not drain then return {OUTCOME.NOT_DRAINED, ''} end
local ok, was = pcall(cjson.decode, drain)
local by = ''
if ok and type(was) == 'table' and type(was.by) == 'string' then by = was.by end
redis.call('HDEL', KEYS[4], ARGV[1])
-- The leader runs a cycle at once: waiting jobs may start there now.
redis.call('LPUSH', KEYS[3], 'node')
redis.call('LTRIM', KEYS[3], 0, 99)
return {OUTCOME.OK, by}
