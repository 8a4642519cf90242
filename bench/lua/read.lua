-- wrk script for the read benchmark: the static request wrk builds from the URL, plus the
-- status count and the RESULT line.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

function init(args)
   ok, bad = 0, 0
end

function response(status, headers, body)
   count_status(status)
end
