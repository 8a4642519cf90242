#!/usr/bin/env bash
# Two-phase-commit benchmark: durable transactions per second through `trellis server`'s
# coordinator, one-shot submits with two branches, against fast local participants (two nginx
# servers answering 200 to every prepare/commit, one worker each) so the coordinator is what is
# measured; and, in the same run and on the same filesystem, this machine's fsync limit (one
# writer doing write+fdatasync in a loop), which bounds any design that fsyncs per transaction.
# Prints a Markdown table for bench/README.md.
#
#   bench/txn.sh                     # defaults: 10 s per load, 64 then 200 connections
#   DURATION=30s LOADS="32 128 256" bench/txn.sh
#   TRELLIS_BIN=/path/to/trellis SKIP_BUILD=1 bench/txn.sh   # another build, e.g. for an A/B
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
LOADS=${LOADS:-64 200}
BASE=${BASE_PORT:-18600}

missing=()
for tool in nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

[ -n "${SKIP_BUILD:-}" ] || cargo build --profile dist -q -j2 -p trellis-cli
TRELLIS=${TRELLIS_BIN:-${CARGO_TARGET_DIR:-target}/dist/trellis}

# The data directory lives where the tests' temporary files do (the same disk as the fsync probe).
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

REG=$((BASE + 1)) PA=$((BASE + 2)) PB=$((BASE + 3))

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$PA; keepalive_requests 1000000; location / { return 200 ''; } }
  server { listen 127.0.0.1:$PB; keepalive_requests 1000000; location / { return 200 ''; } }
}
CONF
"$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

# The fsync limit: 4 KiB write + fdatasync, one writer, 3 s.
fsyncs=$(python3 - "$work" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
block = b"x" * 4096
n, start = 0, time.monotonic()
while time.monotonic() - start < 3:
    os.pwrite(fd, block, (n % 256) * 4096)
    os.fdatasync(fd)
    n += 1
print(int(n / (time.monotonic() - start)))
PY
)

"$TRELLIS" server --data-dir "$work/data" --http "127.0.0.1:$REG" --dns off >"$work/server.log" 2>&1 &
server_pid=$!
pids+=($server_pid)
wait_for() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }
wait_for "http://127.0.0.1:$REG/v1/status/leader"
for _ in $(seq 1 100); do curl -fsS -o /dev/null -X POST "http://127.0.0.1:$PA/x" && break; sleep 0.05; done

export PARTICIPANT_A="http://127.0.0.1:$PA/a" PARTICIPANT_B="http://127.0.0.1:$PB/b"
url="http://127.0.0.1:$REG/v1/trellis/txn"
metric() { curl -fsS "http://127.0.0.1:$REG/metrics" | awk -v m="$1" '$1==m {print $2}'; }
wrk -t2 -c64 -d2s -s bench/lua/txn_submit.lua "$url" >/dev/null # warm-up

echo "fsync limit (4 KiB write + fdatasync, one writer, same filesystem): $fsyncs/s"
echo
echo "| connections | transactions/s | ÷ fsync limit | p50 | p99 | records per log commit | log commit | server CPU per transaction | errors |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for connections in $LOADS; do
  committed_before=$(metric trellis_txn_committed_total)
  batch_sum=$(metric trellis_txn_log_batch_size_sum) batch_count=$(metric trellis_txn_log_batch_size_count)
  commit_sum=$(metric trellis_txn_log_commit_duration_seconds_sum)
  cpu_before=$(awk '{print $14+$15}' "/proc/$server_pid/stat")
  out=$(wrk -t2 -c"$connections" -d"$DURATION" --latency -s bench/lua/txn_submit.lua "$url")
  cpu_after=$(awk '{print $14+$15}' "/proc/$server_pid/stat")
  committed=$(awk -v a="$(metric trellis_txn_committed_total)" -v b="$committed_before" 'BEGIN {print a-b}')
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  batch=$(awk -v s="$(metric trellis_txn_log_batch_size_sum)" -v c="$(metric trellis_txn_log_batch_size_count)" \
    -v s0="$batch_sum" -v c0="$batch_count" 'BEGIN {if (c>c0) printf "%.1f", (s-s0)/(c-c0)}')
  commit_ms=$(awk -v s="$(metric trellis_txn_log_commit_duration_seconds_sum)" -v c="$(metric trellis_txn_log_batch_size_count)" \
    -v s0="$commit_sum" -v c0="$batch_count" 'BEGIN {if (c>c0) printf "%.2f ms", 1000*(s-s0)/(c-c0)}')
  cpu_us=$(awk -v a="$cpu_after" -v b="$cpu_before" -v n="$committed" 'BEGIN {if (n>0) printf "%.0f µs", (a-b)*10000/n}')
  ratio=$(awk -v r="$rps" -v f="$fsyncs" 'BEGIN {printf "%.2f×", r/f}')
  echo "| $connections | $rps | $ratio | $p50 | $p99 | $batch | $commit_ms | $cpu_us | ${errors:-none} |"
done
echo
echo "committed by the coordinator's counter over the whole run: $(metric trellis_txn_committed_total)"
