#!/usr/bin/env bash
# Trace ingest benchmark: spans per second, and per second of the server's CPU ("per core"),
# that `trellis server --dev` takes over OTLP/HTTP protobuf, then OTLP/gRPC, in batches of 512
# typical HTTP spans (service, operation, 8 attributes, status) from concurrent connections,
# sent by crates/trellis-server/examples/otlp_load.rs on the same machine. The server's CPU
# time is read from /proc/<pid>/stat (utime + stime) before and after each load.
# Prints a Markdown table for bench/README.md.
#
#   bench/otlp.sh                                   # defaults: 10 s, 8 connections, 512 spans
#   DURATION=20 CONNECTIONS="4 16" BATCH=512 bench/otlp.sh
#   PROTOCOLS=http bench/otlp.sh                     # only OTLP/HTTP
#   TRELLIS_BIN=/path/to/trellis SKIP_BUILD=1 bench/otlp.sh   # another build, e.g. for an A/B
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-8}
BATCH=${BATCH:-512}
PROTOCOLS=${PROTOCOLS:-http grpc}
BASE=${BASE_PORT:-18700}
TARGET=${CARGO_TARGET_DIR:-target}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -j2 -p trellis-cli
  cargo build --release -q -j2 -p trellis-server --example otlp_load
fi
TRELLIS=${TRELLIS_BIN:-$TARGET/release/trellis}
LOADGEN=${LOADGEN_BIN:-$TARGET/release/examples/otlp_load}

work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

API=$((BASE + 1)) HTTP=$((BASE + 2)) GRPC=$((BASE + 3))
"$TRELLIS" server --dev --http "127.0.0.1:$API" --dns off \
  --otlp "127.0.0.1:$HTTP" --otlp-grpc "127.0.0.1:$GRPC" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do curl -fsS -o /dev/null "http://127.0.0.1:$API/v1/status/leader" 2>/dev/null && break; sleep 0.05; done

ticks=$(getconf CLK_TCK)
# utime + stime of the server, in clock ticks (fields 14 and 15; the name in field 2 has no
# spaces here).
cpu() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
metric() { curl -fsS "http://127.0.0.1:$API/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "| protocol | connections | spans/s | server CPU (cores) | spans per CPU-second | throttled | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for protocol in $PROTOCOLS; do
  for conns in $CONNECTIONS; do
    port=$HTTP; [ "$protocol" = grpc ] && port=$GRPC
    before=$(cpu)
    out=$("$LOADGEN" "http://127.0.0.1:$port" "$protocol" "$conns" "$DURATION" "$BATCH")
    after=$(cpu)
    echo "$out" >>"$work/loadgen.log"
    field() { echo "$out" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
    spans=$(field spans) seconds=$(field seconds)
    python3 - "$protocol" "$conns" "$spans" "$seconds" "$before" "$after" "$ticks" \
      "$(field throttled)" "$(field errors)" <<'PY'
import sys
proto, conns, spans, secs, before, after, ticks, throttled, errors = sys.argv[1:]
cpu = (int(after) - int(before)) / int(ticks)
spans, secs = int(spans), float(secs)
print(f"| {proto} | {conns} | {spans / secs:,.0f} | {cpu / secs:.2f} | "
      f"{spans / cpu if cpu else 0:,.0f} | {throttled} | {errors} |")
PY
  done
done
echo
echo "request body: $(tr ' ' '\n' <"$work/loadgen.log" | awk -F= '$1 == "request_bytes" {print $2}' | sort -u | xargs) bytes" \
  "for $BATCH spans (HTTP; gRPC adds a 5-byte frame header)"
echo "store after the run: $(metric trellis_trace_store_spans) spans, $(metric trellis_trace_store_traces) traces," \
  "$(metric trellis_trace_store_bytes) bytes (bound $(metric trellis_trace_store_max_bytes))," \
  "$(metric trellis_trace_store_evicted_traces_total) traces evicted"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
