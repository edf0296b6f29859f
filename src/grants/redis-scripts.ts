/**
 * Lua run inside Redis, so each is atomic. Key layout (prefix `pamgate:`):
 *   req:<id>   the request, as keyv stores it (read back with keyv)
 *   changes    sorted set: id → version of its last commit (doubles as the list of all ids)
 *   version    commit counter
 *   epoch      random id of this Redis's history; a new one means the data was lost (reload)
 *   lock:<id>  lock token while an instance changes that request
 */

/** Stores one request, bumps the version, records it in the change set and announces it. */
export const COMMIT = `
if ARGV[3] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[3] then
  return redis.error_reply('PAMGATE_LOCK_LOST the lock on this request expired before the change was stored')
end
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], ARGV[4]) end
redis.call('SET', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], v, ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return v
`;

/** epoch, version, and the ids committed after ARGV[1]. */
export const SINCE = `
local e = redis.call('GET', KEYS[3])
if not e then
  e = ARGV[2]
  redis.call('SET', KEYS[3], e)
end
local v = redis.call('GET', KEYS[2]) or '0'
return { e, v, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf') }
`;

/** Deletes the lock only if it is still ours. */
export const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;
