#!/usr/bin/env bash
# Proves the README's first two commands on a bare Debian 12: builds a clean bookworm
# root with debootstrap, puts in only what the README says a newcomer has (the Rust
# toolchain, as rustup installs it, with the CA certificates rustup itself needs), copies
# this checkout in, and runs there, as root:
#   1. `cargo run --release`: waits until the hub answers /readyz, then stops it
#   2. `./scripts/test`: the whole suite, installing what it needs
# Everything it prints goes to the log (default target/bare-debian.log) too.
#
#   sudo scripts/bare-debian.sh [ROOT_DIR]    # default ROOT_DIR: /var/tmp/scorehub-bare
#
# Needs root (debootstrap, chroot, mounts), the Debian mirror (http://deb.debian.org), and
# the Rust toolchain of the user running it in ~/.rustup and ~/.cargo. A root left from an
# earlier run is reused for the base system (debootstrap is slow) but gets a fresh copy of
# the checkout and an empty build directory; `rm -rf ROOT_DIR` starts from nothing.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
ROOT_DIR=${1:-/var/tmp/scorehub-bare}
LOG=${LOG:-$REPO/target/bare-debian.log}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
RUSTUP_SRC=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_SRC=${CARGO_HOME:-$HOME/.cargo}

die() {
    printf 'bare-debian: %s\n' "$*" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot and mounts need it)"
[[ -x $CARGO_SRC/bin/cargo && -d $RUSTUP_SRC/toolchains ]] ||
    die "no Rust toolchain in $CARGO_SRC and $RUSTUP_SRC (set CARGO_HOME / RUSTUP_HOME)"
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1

MOUNTS=()
cleanup() {
    local status=$?
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[$i]}" 2>/dev/null || true
    done
    echo "bare-debian: exit $status (log: $LOG)"
    exit "$status"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

if ! command -v debootstrap >/dev/null; then
    step "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi
if [[ ! -f $ROOT_DIR/etc/debian_version ]]; then
    step "debootstrap bookworm into $ROOT_DIR"
    rm -rf "$ROOT_DIR"
    debootstrap --variant=minbase bookworm "$ROOT_DIR" "$MIRROR"
fi
echo "Debian $(cat "$ROOT_DIR/etc/debian_version") in $ROOT_DIR"

# A chroot starts no services: package scripts that try (redis-server, prometheus) are
# told so, as on a container.
printf '#!/bin/sh\nexit 101\n' >"$ROOT_DIR/usr/sbin/policy-rc.d"
chmod +x "$ROOT_DIR/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf"

mount_in() { # mount_in TARGET ARGS...: mounts under the root, unmounted at exit
    local target=$ROOT_DIR$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    MOUNTS+=("$target")
}
mount_in /proc -t proc proc
mount_in /sys -t sysfs sys
mount_in /dev --bind /dev
mount_in /dev/pts --bind /dev/pts
mount_in /dev/shm -t tmpfs tmpfs

step "the Rust toolchain (rustup's), and the CA certificates rustup needs"
rm -rf "$ROOT_DIR/root/.rustup" "$ROOT_DIR/root/.cargo"
mkdir -p "$ROOT_DIR/root/.cargo"
cp -a "$RUSTUP_SRC" "$ROOT_DIR/root/.rustup"
cp -a "$CARGO_SRC/bin" "$ROOT_DIR/root/.cargo/bin"
chroot "$ROOT_DIR" env DEBIAN_FRONTEND=noninteractive bash -c \
    'apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates'
# This network's own setup, as every machine on it has it: the local CAs of its egress
# proxy (/usr/local/share/ca-certificates) and the variables of this environment that
# point TLS clients (pip, node, curl) at the system bundle. Nothing of the project's.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$ROOT_DIR/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT_DIR/usr/local/share/ca-certificates/"
    chroot "$ROOT_DIR" update-ca-certificates
fi
mapfile -t NET_ENV < <(env | grep -E '^[A-Z0-9_]*(CERT|CA_|_CA)[A-Z0-9_]*=' || true)

step "this checkout (committed files only) into /root/scorehub"
rm -rf "$ROOT_DIR/root/scorehub"
git -C "$REPO" archive --format=tar --prefix=scorehub/ HEAD | tar -x -C "$ROOT_DIR/root"
echo "at $(git -C "$REPO" rev-parse --short HEAD)"

# What is on the bare root before the README's commands: no node, redis, chromium, cc.
chroot "$ROOT_DIR" bash -c 'for c in cc node npm redis-server chromium python3; do
    printf "%-14s %s\n" "$c" "$(command -v $c || echo absent)"; done'

in_root() { # in_root SCRIPT: runs SCRIPT in the checkout inside the root, as a login shell
    chroot "$ROOT_DIR" env -i HOME=/root TERM=dumb "${NET_ENV[@]}" \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c "cd /root/scorehub && $1"
}

step "README, first: what it needs besides Rust (a C linker)"
in_root 'command -v cc >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev; }'

step "README command 1: cargo run --release (until /readyz answers 200)"
in_root '
set -u
cargo run --release >/tmp/hub.log 2>&1 &
hub=$!
addr=""
for _ in $(seq 1 1800); do
    addr=$(sed -n "s/.*listening addr=\([0-9.:]*\).*/\1/p" /tmp/hub.log | head -1)
    [[ -n $addr ]] && break
    kill -0 $hub 2>/dev/null || { cat /tmp/hub.log; echo "the hub exited"; exit 1; }
    sleep 1
done
[[ -n $addr ]] || { tail -20 /tmp/hub.log; echo "no listening line within 30 min"; exit 1; }
exec 3<>/dev/tcp/${addr%:*}/${addr##*:}
printf "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" >&3
status=$(head -1 <&3)
echo "GET /readyz: $status"
kill -TERM $hub; wait $hub || true
tail -5 /tmp/hub.log
[[ $status == *" 200 "* ]]'

step "README command 2: ./scripts/test"
in_root './scripts/test'

step "both README commands passed on a bare Debian $(cat "$ROOT_DIR/etc/debian_version")"
