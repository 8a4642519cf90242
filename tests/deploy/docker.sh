#!/usr/bin/env bash
# The container image and the compose example, built and run for real on a Docker daemon this
# script starts (and stops) itself:
#
#   1. The Dockerfile at the root, unchanged, built with no network (`--network=none`): the
#      context is the tree plus its crates from `cargo vendor`, and the base images are made
#      from Debian packages (tests/deploy/dockerd.sh). Then the image is checked: size (goal
#      at most 40 MB), non-root user, OCI labels, exposed ports, `--version` with the commit,
#      the HEALTHCHECK turning healthy, and the registry's data surviving a restart on its
#      named volume.
#   2. deploy/compose.yaml brought up with that image: the demo's client flow runs against
#      the gateway (users, orders placed and refused as transactions, an app killed and
#      restarted by Docker while requests keep succeeding), then `down -v` must leave no
#      container, network or volume behind.
#
# Usage: tests/deploy/docker.sh   (as root; scripts/install-deps installs docker.io,
#        docker-compose and debootstrap). Everything it keeps goes under the target dir.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
source "$here/dockerd.sh"

image="trellis:test"
project="trellis-deploy-test"
compose=(docker-compose -f "$root/deploy/compose.yaml" -p "$project")

# Removes what an earlier, interrupted run may have left in the kept daemon state.
cleanup_docker() {
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    "${docker[@]}" rm -f trellis-image-test >/dev/null 2>&1 || true
    "${docker[@]}" volume rm -f trellis-image-test-data >/dev/null 2>&1 || true
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() { # container timeout-seconds
    local status=""
    for _ in $(seq 1 $(($2 * 2))); do
        status="$("${docker[@]}" inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || true)"
        [[ "$status" == healthy ]] && return 0
        sleep 0.5
    done
    "${docker[@]}" logs --tail 30 "$1" >&2 || true
    die "$1 is not healthy after $2 s (last status: ${status:-none})"
}

start_dockerd
cleanup_docker
read -r rust_image runtime_image < <(base_images)

# --- 1. the image ------------------------------------------------------------------------------
context="$(mktemp -d "$state/context.XXXXXX")"
trap 'rm -rf "$context"; stop_dockerd' EXIT
say "build context: the tree and its vendored crates ($context)"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -C "$context" -xf -
cargo vendor --locked --quiet "$context/vendor" >/dev/null
mkdir -p "$context/.cargo"
printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "vendor"\n' \
    >"$context/.cargo/config.toml"

commit="$(git rev-parse --short=12 HEAD)"
say "docker build --network=none (build image $rust_image, runtime image $runtime_image)"
started=$(date +%s)
DOCKER_BUILDKIT=0 "${docker[@]}" build --network=none --quiet \
    --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$runtime_image" \
    --build-arg "TRELLIS_GIT_COMMIT=$commit" \
    -f "$root/Dockerfile" -t "$image" "$context" >"$state/build.log" 2>&1 \
    || { tail -40 "$state/build.log" >&2; die "docker build failed (log $state/build.log)"; }
echo "built in $(($(date +%s) - started)) s"
rm -rf "$context"

size="$("${docker[@]}" image inspect -f '{{.Size}}' "$image")"
echo "image size: $((size / 1000)) kB ($(awk "BEGIN {printf \"%.1f\", $size / 1e6}") MB)"
((size <= 40000000)) || die "the image is $size bytes; the goal is at most 40 MB"
inspect() { "${docker[@]}" image inspect -f "$1" "$image"; }
[[ "$(inspect '{{.Config.User}}')" == "65532:65532" ]] || die "the image does not run as 65532:65532"
[[ "$(inspect '{{index .Config.Labels "org.opencontainers.image.revision"}}')" == "$commit" ]] \
    || die "org.opencontainers.image.revision is not $commit"
[[ -n "$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}')" ]] || die "no version label"
inspect '{{json .Config.Healthcheck.Test}}' | grep -q '"health"' || die "no HEALTHCHECK running trellis health"
for port in 8500/tcp 8600/udp 4317/tcp 4318/tcp 8080/tcp 15000/tcp; do
    inspect '{{json .Config.ExposedPorts}}' | grep -q "\"$port\"" || die "$port not exposed"
done
"${docker[@]}" run --rm "$image" --version | grep -q "(commit $commit)" || die "--version lacks the commit"
if "${docker[@]}" run --rm --network host "$image" health --timeout=2s "http://127.0.0.1:$(free_port)/" 2>/dev/null; then
    die "trellis health succeeded against a closed port"
fi

http="$(free_port)"
say "the registry in the image on 127.0.0.1:$http (host network), data on a named volume"
run_registry() {
    "${docker[@]}" run -d --name trellis-image-test --network host \
        --health-interval=1s --health-start-period=20s \
        -e "TRELLIS_HEALTH_URL=http://127.0.0.1:$http/v1/status/leader" \
        -v trellis-image-test-data:/var/lib/trellis "$image" \
        server "--http=127.0.0.1:$http" --dns=off --otlp=off --otlp-grpc=off \
        --data-dir=/var/lib/trellis --node-name=image-test >/dev/null
}
run_registry
wait_healthy trellis-image-test 60
pid="$("${docker[@]}" inspect -f '{{.State.Pid}}' trellis-image-test)"
[[ "$(stat -c %u "/proc/$pid")" == 65532 ]] || die "the server process does not run as uid 65532"
curl -fsS -X PUT "http://127.0.0.1:$http/v1/agent/service/register" \
    -d '{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": 9000}' >/dev/null
"${docker[@]}" stop -t 10 trellis-image-test >/dev/null
"${docker[@]}" rm trellis-image-test >/dev/null
run_registry
wait_healthy trellis-image-test 60
curl -fsS "http://127.0.0.1:$http/v1/catalog/service/web" | grep -q '"ServiceID":"web-1"' \
    || die "the registration did not survive a new container on the same volume"
echo "healthy as uid 65532; a registration survived a new container on the volume"
"${docker[@]}" rm -f trellis-image-test >/dev/null
"${docker[@]}" volume rm trellis-image-test-data >/dev/null

# --- 2. the compose example ----------------------------------------------------------------------
export TRELLIS_IMAGE="$image" TRELLIS_GATEWAY_PORT="$(free_port)" TRELLIS_REGISTRY_PORT="$(free_port)"
say "docker-compose up (gateway on 127.0.0.1:$TRELLIS_GATEWAY_PORT, registry on 127.0.0.1:$TRELLIS_REGISTRY_PORT)"
"${compose[@]}" up -d --quiet-pull 2>&1 | tail -5 >&2 \
    || die "docker-compose up failed"
if ! python3 "$here/compose_flow.py" "http://127.0.0.1:$TRELLIS_GATEWAY_PORT" \
    "http://127.0.0.1:$TRELLIS_REGISTRY_PORT" "$project"; then
    "${compose[@]}" ps >&2 || true
    "${compose[@]}" logs --tail 20 >&2 || true
    die "the client flow against the compose example failed"
fi
say "docker-compose down -v"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
left="$("${docker[@]}" ps -aq --filter "label=com.docker.compose.project=$project")
$("${docker[@]}" volume ls -q --filter "label=com.docker.compose.project=$project")
$("${docker[@]}" network ls -q --filter "label=com.docker.compose.project=$project")"
[[ -z "${left//[[:space:]]/}" ]] || die "down -v left behind: $left"
echo "nothing left behind"
say "image and compose tests passed"
