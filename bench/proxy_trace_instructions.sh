#!/usr/bin/env bash
# Instructions per gateway request with tracing off vs on (every request sampled, spans exported
# to a sink that discards them), counted by callgrind: repeatable on a noisy shared machine,
# where wall-clock ratios are not. The gateway runs under valgrind with one worker; wrk sends
# requests for REQ_SECONDS; the counters are zeroed before the load and dumped after the
# exporter's last batch, so the count covers exactly the requests wrk completed plus their
# export. Prints instructions per request for both and the ratio.
#
#   bench/proxy_trace_instructions.sh              # builds the release binary first
#   SKIP_BUILD=1 TRELLIS_BIN=target/release/trellis bench/proxy_trace_instructions.sh
#
# Needs valgrind, nginx, wrk, curl (Debian packages). Uses ports BASE_PORT (19100) to +6.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ_SECONDS=${REQ_SECONDS:-8}
B=${BASE_PORT:-19100}
UP=$((B + 1)) REG=$((B + 2)) GW=$((B + 3))
if [ -z "${SKIP_BUILD:-}" ]; then
  # The release profile keeps symbols (only debug info is stripped), so callgrind_annotate
  # can name functions; dist strips them.
  cargo build --release -q -j2 -p trellis-cli
fi
T=${TRELLIS_BIN:-${CARGO_TARGET_DIR:-target}/release/trellis}
for tool in valgrind callgrind_control nginx wrk curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "needs $tool" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/up"
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/up/nginx.pid; error_log $work/up/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/up; proxy_temp_path $work/up;
  fastcgi_temp_path $work/up; uwsgi_temp_path $work/up; scgi_temp_path $work/up;
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok'; } } }
CONF
"$NGINX" -c "$work/up/nginx.conf" -p "$work/up" & pids+=($!)
"$T" server --dev --http "127.0.0.1:$REG" --otlp off --otlp-grpc off --dns off >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$REG/v1/status/leader" 2>/dev/null && break; sleep 0.1; done
curl -fsS -X PUT "http://127.0.0.1:$REG/v1/agent/service/register" \
  -d "{\"Name\":\"bench\",\"ID\":\"bench-1\",\"Address\":\"127.0.0.1\",\"Port\":$UP}" >/dev/null

declare -A per_request
for mode in off on; do
  endpoint=off
  [ "$mode" = on ] && endpoint="http://127.0.0.1:$UP/v1/traces"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$mode" \
    "$T" gateway --registry "http://127.0.0.1:$REG" --listen "127.0.0.1:$GW" \
    --admin "127.0.0.1:$((B + 5))" --route /=bench --workers 1 \
    --otlp-endpoint "$endpoint" --trace-sample 1 >"$work/gateway.$mode.log" 2>&1 &
  gateway=$!
  for _ in $(seq 1 300); do curl -fsS -o /dev/null "http://127.0.0.1:$GW/" 2>/dev/null && break; sleep 0.2; done
  callgrind_control -z "$gateway" >/dev/null 2>&1
  out=$(wrk -t1 -c4 -d"${REQ_SECONDS}s" "http://127.0.0.1:$GW/")
  sleep 1.5 # the exporter sends at least every second
  callgrind_control -d "$gateway" >/dev/null 2>&1
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.$mode.1")
  per_request[$mode]=$((total / requests))
  echo "tracing $mode: $requests requests, ${per_request[$mode]} instructions per request"
  if [ -n "${KEEP_PROFILE:-}" ]; then cp "$work/cg.$mode.1" "${KEEP_PROFILE}.$mode"; fi
  kill -INT "$gateway"; wait "$gateway" 2>/dev/null || true
done
awk -v off="${per_request[off]}" -v on="${per_request[on]}" \
  'BEGIN {printf "tracing on / off: %.3f× instructions per request (+%d)\n", on / off, on - off}'
