# Sourced by the test suites under tests/ (compat, ui): sets `target_dir` (the cargo target dir,
# absolute, under which a suite builds and installs everything) and `TRELLIS_BIN` (absolute,
# exported): the given binary, or the debug build of this tree, built first. Expects `root` (the
# repository) and the functions `say` and `die`.

target_dir="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
if [[ -z "${TRELLIS_BIN:-}" ]]; then
    # Always (a no-op when it is up to date): a binary left from older sources would be tested
    # instead of this tree.
    TRELLIS_BIN="$target_dir/debug/trellis"
    say "building $TRELLIS_BIN"
    (cd "$root" && cargo build -j2 -p trellis-cli)
fi
[[ -x "$TRELLIS_BIN" ]] || die "TRELLIS_BIN=$TRELLIS_BIN is not an executable"
TRELLIS_BIN="$(cd "$(dirname "$TRELLIS_BIN")" && pwd)/$(basename "$TRELLIS_BIN")"
export TRELLIS_BIN
