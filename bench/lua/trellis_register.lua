-- wrk script: every request registers a new, distinct service instance through
-- PUT /v1/agent/service/register (a durable write).  Argument 1: a run prefix for the IDs;
-- argument 2: over how many service names the instances are spread (default 1,000).  Each
-- instance has tags, meta and a TTL check, like a realistic registration.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local headers = { ["Content-Type"] = "application/json" }

function init(args)
   ok, bad = 0, 0
   prefix = (args[1] or "reg") .. "-t" .. tid .. "-"
   n = 0
   services = tonumber(args[2] or "1000")
end

function request()
   n = n + 1
   local id = prefix .. n
   local body = string.format(
      '{"ID":"%s","Name":"reg-%d","Address":"10.%d.%d.%d","Port":%d,'
         .. '"Tags":["v1","primary"],"Meta":{"version":"1.4.2","zone":"zone-%d"},'
         .. '"Check":{"Name":"heartbeat","TTL":"30s"}}',
      id, n % services, tid, math.floor(n / 256) % 256, n % 256, 8000 + n % 1000, n % 3)
   return wrk.format("PUT", "/v1/agent/service/register", headers, body)
end

function response(status, headers, body)
   count_status(status)
end
