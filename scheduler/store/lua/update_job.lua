-- A person changes a job (`labq update`): a waiting job any of its request (checked by the
-- caller against the job as read), a running one only its time limit, and only down unless
-- an admin asks. The leader is told through the changed list (its cached request is stale).
-- KEYS[1] job hash  KEYS[2] changed list
-- ARGV[1] job id  ARGV[2] caller  ARGV[3] caller is admin ('1'/'')  ARGV[4] fields (JSON)
-- ARGV[5] the state the caller read
-- Returns NO_SUCH_JOB, FORBIDDEN, STALE_VIEW, ALREADY_DONE, NOT_WAITING, or OK.
local fields = redis.call('HMGET', KEYS[1], 'state', 'user', 'time_limit_s')
local state, owner = fields[1], fields[2]
if not state then return OUTCOME.NO_SUCH_JOB end
if owner ~= ARGV[2] and ARGV[3] ~= '1' then return OUTCOME.FORBIDDEN end
if is_terminal(state) then return OUTCOME.ALREADY_DONE end
local changes = cjson.decode(ARGV[4])
if not is_waiting(state) then
  for name, value in pairs(changes) do
    if name ~= 'time_limit_s' then return OUTCOME.NOT_WAITING end
    if ARGV[3] ~= '1' and tonumber(value) > tonumber(fields[3]) then return OUTCOME.FORBIDDEN end
  end
elseif not is_waiting(ARGV[5]) then
  return OUTCOME.STALE_VIEW
end
local args = {}
for name, value in pairs(changes) do
  args[#args + 1] = name
  args[#args + 1] = value
end
if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, 9999)
return OUTCOME.OK
