#!/usr/bin/env bash
# A Debian bookworm root filesystem as a tarball, made with debootstrap on the host, for
# `docker import`: how this project gets base images without a registry (the sandbox
# image, deploy/docker/sandbox/build.sh, and the runtime image's base, deploy/build.sh).
#
#   bash deploy/docker/rootfs.sh TARBALL PACKAGES      # PACKAGES: comma-separated, e.g. python3,bubblewrap
#
# Does nothing when TARBALL exists (delete it to rebuild). Needs root and debootstrap; the
# mirror (CGRPO_DEBIAN_MIRROR, default deb.debian.org) is reached from the host, never
# from a container. Package caches, docs, man pages and locales are left out.
set -euo pipefail
TARBALL="$1"
PACKAGES="$2"
MIRROR="${CGRPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
[ -s "$TARBALL" ] && exit 0
command -v debootstrap >/dev/null || { echo "debootstrap missing (apt-get install -y debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }
mkdir -p "$(dirname "$TARBALL")"
LOG="$(dirname "$TARBALL")/debootstrap.log"
ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/cgrpo-rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT
printf '\033[1;34m[rootfs]\033[0m debootstrap --variant=minbase %s (%s)\n' "$SUITE" "$PACKAGES"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$LOG" 2>&1 \
  || { tail -20 "$LOG" >&2; exit 1; }
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
tar -C "$ROOTFS" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
