-- A GCRA that hands out slots, for RedisQuotaStore. KEYS[1] holds the host's theoretical
-- arrival time, in microseconds of the Redis server's clock (one clock for the whole fleet).
-- ARGV: the quota's interval (µs) and its burst. Reserves the next slot and returns how many
-- microseconds until it comes.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local arrival = now
local stored = redis.call('GET', KEYS[1])
if stored then
  arrival = math.max(tonumber(stored), now)
end
local next_arrival = arrival + interval
-- Kept a second past the time it stops mattering, then dropped: an idle host costs nothing.
local keep = math.ceil((next_arrival - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', next_arrival), 'PX', string.format('%.0f', keep))
return math.max(arrival - tolerance - now, 0)
