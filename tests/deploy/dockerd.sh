# Sourced by tests/deploy/docker.sh: a Docker daemon of the test's own, and the base images
# the Dockerfile is built on, made from Debian packages because no image can be pulled here.
#
#   start_dockerd     starts dockerd (data under $state/root, kept between runs as a cache;
#                     sockets under a short /tmp dir), exports DOCKER_HOST, and stops it by pid
#                     when the script exits. No iptables rules: nothing is NATed to the outside;
#                     the containers reach only each other, on the bridge this daemon creates.
#   base_images       prints "RUST_IMAGE RUNTIME_IMAGE", building them when missing:
#                     - the build image: debootstrap --variant=minbase bookworm with gcc,
#                       libc6-dev and protobuf-compiler, plus this machine's Rust toolchain (the one rust-toolchain.toml
#                       names), as the public rust:<version>-slim-bookworm image provides;
#                     - the runtime image: only the files of Debian's libc6, libgcc-s1 and
#                       netbase, an /etc/passwd with `nonroot` (65532) and a /tmp, as
#                       gcr.io/distroless/cc-debian12:nonroot provides.
# Expects `root`, `target_dir`, `say` and `die`.

state="$target_dir/deploy-docker"
docker=(/usr/bin/docker)

start_dockerd() {
    command -v dockerd >/dev/null || die "dockerd missing (scripts/install-deps installs docker.io)"
    [[ $(id -u) -eq 0 ]] || die "the image tests run dockerd, which needs root"
    mkdir -p "$state"
    run_dir="$(mktemp -d /tmp/trellis-dockerd.XXXXXX)"
    export DOCKER_HOST="unix://$run_dir/docker.sock"
    say "starting dockerd (data $state/root, log $state/dockerd.log)"
    dockerd --data-root "$state/root" --exec-root "$run_dir/exec" \
        --pidfile "$run_dir/dockerd.pid" --host "$DOCKER_HOST" \
        --iptables=false --ip-masq=false --bridge=none \
        --default-address-pool base=10.213.0.0/16,size=24 \
        >"$state/dockerd.log" 2>&1 &
    dockerd_pid=$!
    trap stop_dockerd EXIT
    for _ in $(seq 1 120); do
        "${docker[@]}" version >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$state/dockerd.log" >&2; die "dockerd exited"; }
        sleep 0.5
    done
    tail -20 "$state/dockerd.log" >&2
    die "dockerd did not answer within 60 s"
}

stop_dockerd() {
    local status=$?
    if [[ -n "${dockerd_pid:-}" ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
        [[ $(type -t cleanup_docker) == function ]] && cleanup_docker || true
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    # dockerd leaves its network namespace files mounted under its exec root.
    awk -v dir="$run_dir/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
    rm -rf "${run_dir:?}"
    exit "$status"
}

# The Debian bookworm minbase tree both base images are made from, kept under $state.
debian_rootfs() {
    local rootfs="$state/rootfs-bookworm" packages="gcc,libc6-dev,netbase,protobuf-compiler"
    if [[ "$(cat "$rootfs/.complete" 2>/dev/null)" != "$packages" ]]; then
        command -v debootstrap >/dev/null || die "debootstrap missing (scripts/install-deps installs it)"
        say "debootstrap --variant=minbase bookworm (log $state/debootstrap.log)" >&2
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" \
            http://deb.debian.org/debian >"$state/debootstrap.log" 2>&1 \
            || { tail -20 "$state/debootstrap.log" >&2; die "debootstrap failed"; }
        printf '%s' "$packages" >"$rootfs/.complete"
    fi
    printf '%s' "$rootfs"
}

has_image() { "${docker[@]}" image inspect "$1" >/dev/null 2>&1; }

build_rust_image() {
    local tag="$1" rootfs sysroot tree
    rootfs="$(debian_rootfs)"
    sysroot="$(cd "$root" && rustc --print sysroot)"
    tree="$(mktemp -d "$state/rust-image.XXXXXX")"
    say "making $tag: the minbase tree and the toolchain at $sysroot"
    cp -a "$rootfs/." "$tree/"
    rm -f "$tree/.complete"
    mkdir -p "$tree/usr/local/rust"
    # The compiler and its libraries; not the documentation (share/).
    cp -a "$sysroot/bin" "$sysroot/lib" "$tree/usr/local/rust/"
    [[ -d "$sysroot/libexec" ]] && cp -a "$sysroot/libexec" "$tree/usr/local/rust/"
    tar -C "$tree" -c . | "${docker[@]}" import \
        --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'WORKDIR /' - "$tag" >/dev/null
    rm -rf "$tree"
}

build_runtime_image() {
    local tag="$1" rootfs tree path dir
    rootfs="$(debian_rootfs)"
    tree="$(mktemp -d "$state/runtime-image.XXXXXX")"
    say "making $tag: the files of libc6, libgcc-s1 and netbase"
    # Bookworm merges /usr: /lib, /lib64, /bin and /sbin are links into /usr, and the
    # packages list their files under either path. Each file goes to its real directory.
    for dir in bin lib lib64 sbin; do ln -s "usr/$dir" "$tree/$dir"; done
    while read -r path; do
        case "$path" in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/locale/* | */gconv/*) continue ;; esac
        [[ -f "$rootfs$path" || -L "$rootfs$path" ]] || continue
        [[ -d "$rootfs$path" && ! -L "$rootfs$path" ]] && continue
        dir="$(chroot "$rootfs" realpath "$(dirname "$path")")"
        mkdir -p "$tree$dir"
        cp -a "$rootfs$path" "$tree$dir/"
    done < <(chroot "$rootfs" dpkg -L libc6 libgcc-s1 netbase)
    mkdir -p "$tree/etc" "$tree/tmp" "$tree/home/nonroot"
    chmod 1777 "$tree/tmp"
    chown 65532:65532 "$tree/home/nonroot"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$tree/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$tree/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$tree/etc/nsswitch.conf"
    tar -C "$tree" -c . | "${docker[@]}" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' - "$tag" >/dev/null
    rm -rf "$tree"
}

base_images() {
    local version rust runtime
    version="$(cd "$root" && rustc --version | awk '{print $2}')"
    # Bump the suffix when the build image's packages change: the daemon's state is kept.
    rust="trellis-test/rust:$version-bookworm-2"
    # Bump the suffix when build_runtime_image changes: the daemon's state is kept.
    runtime="trellis-test/cc:bookworm-2"
    has_image "$rust" || build_rust_image "$rust" >&2
    has_image "$runtime" || build_runtime_image "$runtime" >&2
    printf '%s %s\n' "$rust" "$runtime"
}
