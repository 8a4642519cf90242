-- Shared by the wrk scripts of bench/registry.sh: per-thread ids, status counting and one
-- machine-readable RESULT line at the end.  Loaded with dofile() from each script.

local threads = {}
local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

-- Counts answers by status; wrk's own counters do not say how many were exactly 200.
function count_status(status)
   if status == 200 then
      ok = ok + 1
   else
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   local ok_total, bad_total = 0, 0
   for _, t in ipairs(threads) do
      ok_total = ok_total + (t:get("ok") or 0)
      bad_total = bad_total + (t:get("bad") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f ok=%d not_ok=%d "
         .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d "
         .. "lat_p50_us=%d lat_p99_us=%d lat_max_us=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      ok_total, bad_total, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
