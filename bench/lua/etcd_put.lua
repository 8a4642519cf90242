-- wrk script: every request puts a new, distinct key through etcd's JSON gateway
-- (POST /v3/kv/put, base64 key and value; a durable write).  Argument 1: a run prefix.
-- The value is an instance record of the same shape and size as the Trellis registration body.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(v / 262144) % 64
      local c2 = math.floor(v / 4096) % 64
      local c3 = math.floor(v / 64) % 64
      local c4 = v % 64
      out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1) .. alphabet:sub(c2 + 1, c2 + 1)
         .. (b and alphabet:sub(c3 + 1, c3 + 1) or "=")
         .. (c and alphabet:sub(c4 + 1, c4 + 1) or "=")
   end
   return table.concat(out)
end

local headers = { ["Content-Type"] = "application/json" }

function init(args)
   ok, bad = 0, 0
   prefix = "bench/" .. (args[1] or "put") .. "-t" .. tid .. "-"
   n = 0
   -- Encoded once per thread so the load generator spends no more per request on etcd than on
   -- Trellis; keys stay distinct, which is what the store has to index and persist.
   value = b64(string.format(
      '{"ID":"%s0000000","Name":"reg-%d","Address":"10.%d.%d.%d","Port":%d,'
         .. '"Tags":["v1","primary"],"Meta":{"version":"1.4.2","zone":"zone-%d"},'
         .. '"Check":{"Name":"heartbeat","TTL":"30s"}}',
      prefix, 500, tid, 1, 1, 8500, 1))
end

function request()
   n = n + 1
   return wrk.format("POST", "/v3/kv/put", headers,
      '{"key":"' .. b64(prefix .. n) .. '","value":"' .. value .. '"}')
end

function response(status, headers, body)
   count_status(status)
end
