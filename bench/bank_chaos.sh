#!/usr/bin/env bash
# The bank chaos test, long: `crates/trellis-cli/tests/bank_chaos.rs` (three `trellis bank`
# participants, two on SQLite and one on PostgreSQL, 16 workers submitting transfers through a
# durable `trellis server`) with 500 SIGKILLs of the coordinator or a participant, each
# restarted at once; release build. Prints the test's figures (crashes per process, transfers
# committed and aborted by cause, time to quiesce) for bench/README.md, and fails if any check
# fails (total balance, branches in doubt, committed transfers on both sides, aborted on
# neither).
#
#   bench/bank_chaos.sh                          # 500 crashes
#   BANK_CHAOS_CRASHES=1000 bench/bank_chaos.sh
#   BANK_CHAOS_SEED=123 bench/bank_chaos.sh      # the chaos and transfers of an earlier run
set -euo pipefail
cd "$(dirname "$0")/.."

export BANK_CHAOS_CRASHES=${BANK_CHAOS_CRASHES:-500}
# PostgreSQL's server binaries (the test starts its own server).
scripts/install-deps >/dev/null

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
cargo test --release -j2 -q -p trellis-cli --test bank_chaos -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^bank chaos' "$log" || true
if [ "$status" -ne 0 ]; then
  echo "bank chaos: FAILED (exit $status); the end of the output:" >&2
  tail -n 60 "$log" >&2
fi
echo "bank chaos: whole run $(( $(date +%s) - start )) s (build included) on $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
exit "$status"
