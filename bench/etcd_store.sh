#!/usr/bin/env bash
# Trellis on etcd (issue 11), side by side with etcd itself, in one run, on a three-member etcd
# cluster on this machine's loopback:
#
#   1. etcd's own durable put rate (wrk through its JSON gateway, POST /v3/kv/put) against
#      Trellis's durable registrations/s (PUT /v1/agent/service/register) with --store etcd
#   2. etcd transactions per registration (the cluster's revision counts them) and per TTL
#      heartbeat that changes nothing
#   3. durable registrations/s through three servers (two followers forward to the leader)
#   4. watch fan-out: 5,000 blocked watchers spread over the three servers, one change on the
#      leader, time from the change to each answer (kernel receive timestamps)
#   5. failover: SIGKILL of the leader until a follower takes a write (the follower finds the
#      leader's address refusing connections and ends its lease; a 2 s lease otherwise), reads
#      being served by the follower throughout
#
# 1 and 3 run in WRITE_ROUNDS interleaved rounds (etcd, one server, three servers): the disk's
# speed drifts, so the ratios are per round, with their median.
#
# Usage: bench/etcd_store.sh           (a couple of minutes; not part of the test suite; installs
#                                      etcd and wrk with apt-get when missing)
# Knobs (environment): DURATION=15s CONNS=64 THREADS=2 HEARTBEATS=2000 TAKEOVERS=3
#                      WATCHERS=5000 FANOUT_ROUNDS=3 WRITE_ROUNDS=3
# Everything it writes goes to target/bench-run/etcd-store/ (logs, data, results.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
DURATION=${DURATION:-15s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
HEARTBEATS=${HEARTBEATS:-2000}
TAKEOVERS=${TAKEOVERS:-3}
WATCHERS=${WATCHERS:-5000}
FANOUT_ROUNDS=${FANOUT_ROUNDS:-3}
WRITE_ROUNDS=${WRITE_ROUNDS:-3}
# 5,000 watchers need 5,000 sockets on each side; take what the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
[[ $TARGET = /* ]] || TARGET=$REPO/$TARGET
BIN=$TARGET/release/trellis
RUN=$REPO/target/bench-run/etcd-store
HELPER=(python3 "$HERE/registry_helper.py")
LUA=$HERE/lua
PIDS=()

log() { printf '\n== %s   [load average: %s]\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
field() { grep -oE "(^| )$2=[^ ]+" "$1" | tail -1 | cut -d= -f2; }
port() { "${HELPER[@]}" freeport; }

missing=()
command -v etcd >/dev/null || missing+=(etcd-server etcd-client)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
log "building the release binary"
(cd "$REPO" && cargo build --release -p trellis-cli)
rm -rf "$RUN"
mkdir -p "$RUN"

# --- a three-member cluster on loopback ----------------------------------------------------------
CLIENT=() PEER=()
for i in 1 2 3; do CLIENT+=("$(port)"); PEER+=("$(port)"); done
CLUSTER="m1=http://127.0.0.1:${PEER[0]},m2=http://127.0.0.1:${PEER[1]},m3=http://127.0.0.1:${PEER[2]}"
for i in 0 1 2; do
    etcd --name "m$((i + 1))" --data-dir "$RUN/etcd-m$((i + 1))" \
        --listen-client-urls "http://127.0.0.1:${CLIENT[i]}" \
        --advertise-client-urls "http://127.0.0.1:${CLIENT[i]}" \
        --listen-peer-urls "http://127.0.0.1:${PEER[i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${PEER[i]}" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new \
        --logger zap --log-outputs stderr >>"$RUN/etcd-m$((i + 1)).log" 2>&1 &
    PIDS+=($!)
done
for i in 0 1 2; do "${HELPER[@]}" wait-http "127.0.0.1:${CLIENT[i]}" /health; done
ENDPOINTS="http://127.0.0.1:${CLIENT[0]},http://127.0.0.1:${CLIENT[1]},http://127.0.0.1:${CLIENT[2]}"
ETCD=127.0.0.1:${CLIENT[0]}

start_trellis() { # NAME ADDR [extra flags]
    local name=$1 addr=$2
    shift 2
    "$BIN" server --http "$addr" --dns off --otlp off --otlp-grpc off --node-name "$name" \
        --data-dir "$RUN/$name" --store etcd --etcd "$ENDPOINTS" "$@" >>"$RUN/$name.log" 2>&1 &
    PIDS+=($!)
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "trellis: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- crates || echo ' + uncommitted changes') (release profile)"
    echo "cpu: $(nproc) cores; etcd $(etcd --version | head -1 | sed 's/etcd Version: //'), three members on loopback, one disk"
} | tee "$RUN/results.md"

# --- 1 to 3: durable writes, in interleaved rounds ------------------------------------------------
# The one disk's fsync time drifts by 2x from minute to minute on this machine, so each round runs
# etcd's puts, one server and three servers back to back, and the ratios are taken per round; the
# report gives each round's ratios and their median.
TRELLIS=127.0.0.1:$(port) F1=127.0.0.1:$(port) F2=127.0.0.1:$(port)
start_trellis active "$TRELLIS"
ACTIVE_PID=${PIDS[-1]}
"${HELPER[@]}" wait-http "$TRELLIS" /v1/status/leader
start_trellis follower1 "$F1"
start_trellis follower2 "$F2"
"${HELPER[@]}" wait-http "$F1" /v1/status/leader
"${HELPER[@]}" wait-http "$F2" /v1/status/leader
PER=$((CONNS / 3))
ETCD_ALL=() REG_ALL=() THREE_ALL=() RATIOS=() THREE_RATIOS=()
for round in $(seq "$WRITE_ROUNDS"); do
    PREFIX=e$(date +%s)r$round
    log "1. round $round: etcd puts, then registrations through one server ($DURATION, $CONNS connections, $THREADS threads)"
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA/etcd_put.lua" "http://$ETCD" -- "$PREFIX" |
        tee "$RUN/wrk-etcd-put-$round.txt"
    BEFORE=$("${HELPER[@]}" etcd-revision "$ETCD")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA/trellis_register.lua" "http://$TRELLIS" -- "$PREFIX" |
        tee "$RUN/wrk-trellis-register-$round.txt"
    AFTER=$("${HELPER[@]}" etcd-revision "$ETCD")
    log "3. round $round: registrations through three servers ($DURATION, $CONNS connections over three)"
    i=0 WRKS=()
    for server in "$TRELLIS" "$F1" "$F2"; do
        i=$((i + 1))
        wrk -t1 -c"$PER" -d"$DURATION" -s "$LUA/trellis_register.lua" "http://$server" -- "${PREFIX}x$i" \
            >"$RUN/wrk-three-$round-$i.txt" &
        WRKS+=($!)
    done
    wait "${WRKS[@]}"
    ETCD_RPS=$(field "$RUN/wrk-etcd-put-$round.txt" rps)
    REG_RPS=$(field "$RUN/wrk-trellis-register-$round.txt" rps)
    REG_OK=$(field "$RUN/wrk-trellis-register-$round.txt" ok)
    THREE_RPS=$(for i in 1 2 3; do field "$RUN/wrk-three-$round-$i.txt" rps; done |
        awk '{ s += $1 } END { printf "%.0f", s }')
    [[ $round = 1 ]] && TXN_PER_REG=$(awk -v t="$((AFTER - BEFORE))" -v n="$REG_OK" 'BEGIN { printf "%.3f", t / n }')
    ETCD_ALL+=("$(printf '%.0f' "$ETCD_RPS")") REG_ALL+=("$(printf '%.0f' "$REG_RPS")") THREE_ALL+=("$THREE_RPS")
    RATIOS+=("$(awk -v a="$REG_RPS" -v b="$ETCD_RPS" 'BEGIN { printf "%.2f", a / b }')")
    THREE_RATIOS+=("$(awk -v a="$THREE_RPS" -v b="$ETCD_RPS" 'BEGIN { printf "%.2f", a / b }')")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
RATIO=$(median "${RATIOS[@]}")
THREE_RATIO=$(median "${THREE_RATIOS[@]}")

log "2. etcd transactions per heartbeat that changes nothing ($HEARTBEATS heartbeats)"
"${HELPER[@]}" heartbeats "$TRELLIS" 20 0 --registered-only
BEFORE=$("${HELPER[@]}" etcd-revision "$ETCD")
HB_OK=$("${HELPER[@]}" heartbeats "$TRELLIS" 20 "$HEARTBEATS")
AFTER=$("${HELPER[@]}" etcd-revision "$ETCD")
# Re-registering the 20 instances takes its own transactions; heartbeats come after.
HB_TXNS=$((AFTER - BEFORE))

# --- 4. fan-out over three servers ---------------------------------------------------------------
log "4. watch fan-out: $WATCHERS watchers over three servers, $FANOUT_ROUNDS changes on the leader"
"${HELPER[@]}" seed "$TRELLIS" web 10
"${HELPER[@]}" fanout "$TRELLIS" web "$WATCHERS" --also "$F1,$F2" --rounds "$FANOUT_ROUNDS" \
    --seed 10 --pid "$ACTIVE_PID" | tee "$RUN/fanout.txt"
F_P50=$(field "$RUN/fanout.txt" p50_ms)
F_P99=$(field "$RUN/fanout.txt" p99_ms)
F_MAX=$(field "$RUN/fanout.txt" max_ms)
for pid in "$ACTIVE_PID" "${PIDS[-1]}" "${PIDS[-2]}"; do kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; done

# --- 5. failover ---------------------------------------------------------------------------------
log "5. failover after SIGKILL of the leader ($TAKEOVERS rounds)"
TAKEOVER_TIMES=()
for round in $(seq "$TAKEOVERS"); do
    A=127.0.0.1:$(port) B=127.0.0.1:$(port)
    start_trellis "a$round" "$A" --etcd-lease-ttl 2s
    A_PID=${PIDS[-1]}
    "${HELPER[@]}" wait-http "$A" /v1/status/leader
    until curl -sf -X PUT "http://$A/v1/kv/leader-ready" -d x >/dev/null; do sleep 0.05; done
    start_trellis "b$round" "$B" --etcd-lease-ttl 2s
    B_PID=${PIDS[-1]}
    "${HELPER[@]}" wait-http "$B" /v1/status/leader
    sleep 1
    T0=$(date +%s.%N)
    kill -KILL "$A_PID"; wait "$A_PID" 2>/dev/null || true
    until curl -sf -X PUT "http://$B/v1/kv/failover" -d x >/dev/null; do sleep 0.02; done
    TAKEOVER_TIMES+=("$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.2f", a - b }')")
    kill -TERM "$B_PID"; wait "$B_PID" 2>/dev/null || true
done

{
    echo
    echo "| measure | Trellis (--store etcd) | etcd | ratio |"
    echo "|---|---|---|---|"
    echo "| durable writes/s, $CONNS connections (rounds) | ${REG_ALL[*]} registrations/s | ${ETCD_ALL[*]} puts/s | ${RATIOS[*]} (median ${RATIO}×) |"
    echo "| etcd transactions per registration | $TXN_PER_REG (group commit) | 1 per put | |"
    echo "| etcd transactions for $HB_OK heartbeats that change nothing | $HB_TXNS | | |"
    echo "| durable writes/s through three servers (two forward), $CONNS connections (rounds) | ${THREE_ALL[*]} registrations/s | ${ETCD_ALL[*]} puts/s | ${THREE_RATIOS[*]} (median ${THREE_RATIO}×) |"
    echo "| watch fan-out, $WATCHERS watchers over three servers, change on the leader → answer | p50 $F_P50 ms, p99 $F_P99 ms, max $F_MAX ms | | |"
    echo "| failover after SIGKILL of the leader (kill → a follower takes a write; reads never stop) | ${TAKEOVER_TIMES[*]} s | | |"
} | tee -a "$RUN/results.md"
