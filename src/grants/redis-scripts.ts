/**
 * Lua run inside Redis, so each is atomic. Key layout (prefix `pamgate:`):
 *   req:<id>   the request, as keyv stores it (read back with keyv)
 *   changes    sorted set: id → version of its last commit (doubles as the list of all ids)
 *   version    commit counter
 *   epoch      random id of this Redis's history; a new one means the data was lost (reload)
 *   log        hash: version → random token of the commit that got that version, for the last
 *              LOG_KEEP versions. A reader that remembers (version, token) can tell whether the
 *              history it followed is still the history Redis has: after a restore from an older
 *              snapshot (RDB, AOF everysec) or a failover to a lagging replica the epoch survives
 *              but the commit at that version is gone or is a different one.
 *   lock:<id>  lock token while an instance changes that request
 */

/** How many commit tokens the log keeps; a reader further behind than this reloads everything. */
export const LOG_KEEP = 20_000;

/**
 * Stores one request, bumps the version, records it in the change set and the log, announces it.
 * KEYS: req, changes, version, epoch, lock, log. ARGV: value, id, lock token, epoch candidate, channel, commit token.
 */
export const COMMIT = `
if ARGV[3] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[3] then
  return redis.error_reply('PAMGATE_LOCK_LOST the lock on this request expired before the change was stored')
end
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], ARGV[4]) end
redis.call('SET', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], v, ARGV[2])
redis.call('HSET', KEYS[6], tostring(v), ARGV[6])
if v > ${LOG_KEEP} then redis.call('HDEL', KEYS[6], tostring(v - ${LOG_KEEP})) end
redis.call('PUBLISH', ARGV[5], ARGV[2])
return v
`;

/**
 * epoch, version, the token of the commit at that version ('' if none), whether the history is
 * intact, and the ids committed after ARGV[1].
 * KEYS: changes, version, epoch, log. ARGV: since version, epoch candidate, then pairs of
 * (version, token) the caller has seen: the history is intact only if Redis has not gone below
 * any of those versions and still has the same commit at each ('' matches a version committed
 * before the log existed).
 */
export const SINCE = `
local e = redis.call('GET', KEYS[3])
if not e then
  e = ARGV[2]
  redis.call('SET', KEYS[3], e)
end
local v = tonumber(redis.call('GET', KEYS[2]) or '0')
local intact = 1
for i = 3, #ARGV - 1, 2 do
  local at = tonumber(ARGV[i])
  if at > 0 and (at > v or (redis.call('HGET', KEYS[4], ARGV[i]) or '') ~= ARGV[i + 1]) then intact = 0 end
end
local head = ''
if v > 0 then head = redis.call('HGET', KEYS[4], tostring(v)) or '' end
return { e, tostring(v), head, intact, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf') }
`;

/** Deletes the lock only if it is still ours. */
export const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Deletes ended requests nobody holds the lock of; returns the ids deleted (or already gone).
 * A request whose stored copy does not parse, or is open, is left alone.
 * KEYS: changes, then per id: req, lock. ARGV: the ids, in the same order.
 */
export const REMOVE_ENDED = `
local removed = {}
for i = 1, #ARGV do
  local req, lock = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('EXISTS', lock) == 0 then
    local raw = redis.call('GET', req)
    local ended = raw == false
    if raw then
      local ok, stored = pcall(cjson.decode, raw)
      local status = ok and type(stored) == 'table' and type(stored.value) == 'table' and stored.value.status
      ended = status == 'denied' or status == 'canceled' or status == 'expired' or status == 'revoked'
    end
    if ended then
      redis.call('DEL', req)
      redis.call('ZREM', KEYS[1], ARGV[i])
      removed[#removed + 1] = ARGV[i]
    end
  end
end
return removed
`;

/**
 * A token bucket shared by every instance: takes a token, or says how long until one is there.
 * Time comes from the caller (instances' clocks agree closely; a clock behind the bucket's refills
 * nothing). The key expires once the bucket would be full again.
 * KEYS: bucket. ARGV: burst, tokens per hour, now (ms). Returns 0 (taken) or the ms to wait.
 */
export const RATE_TAKE = `
local burst, perHour, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
elseif now > at then
  tokens, at = math.min(burst, tokens + (now - at) * perHour / 3600000), now
else
  tokens = math.min(tokens, burst)
end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.max(1, math.ceil((1 - tokens) * 3600000 / perHour)) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 3600000 / perHour) + 1000)
return wait
`;
