-- wrk script for bench/replicas.sh: GET /pxe/{mac} over many machines.
-- replicas.sh prepends `macs = { "52:54:01:00:00:00", ... }`. Each wrk
-- thread starts at its own offset and steps through the list, so the
-- threads' connections ask for different machines at any moment, as a
-- lab's PXE traffic does (requests for one machine serialize on its lock).
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("offset", counter)
end

function init(args)
    i = offset * 7919
end

function request()
    i = i + 1
    return wrk.format("GET", "/pxe/" .. macs[(i % #macs) + 1])
end
