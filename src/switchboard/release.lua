-- Give the lease up (on SIGTERM), only if it is still ours, so a standby takes over at its next
-- beat instead of after the lease time.
--
-- KEYS[1] the active-instance lease; ARGV[1] this instance's token
-- Returns 1 released, 0 not ours (or not there, or not a string: left alone)
if redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
