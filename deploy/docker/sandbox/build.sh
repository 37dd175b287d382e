#!/usr/bin/env bash
# Build the sandbox image without a registry: debootstrap a minimal Debian bookworm with
# python3, then `docker import` it. About a minute and ~250 MB; the root filesystem
# tarball is cached (CGRPO_SANDBOX_CACHE, default .cache/ in the repository) so a later
# import after the engine lost its images takes seconds.
#
#   bash deploy/docker/sandbox/build.sh [IMAGE]        # default cgrpo-sandbox:1
#
# The image holds nothing but Debian's python3 (standard library, no pip, no compilers):
# the executor is sent as source when the container starts (sandbox/container.py), and the
# container runs as a non-root uid with every capability dropped. Where a registry is
# reachable, `docker build -f deploy/docker/sandbox/Dockerfile` builds an equivalent image.
set -euo pipefail
IMAGE="${1:-${CGRPO_SANDBOX_IMAGE:-cgrpo-sandbox:1}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CACHE="${CGRPO_SANDBOX_CACHE:-$ROOT/.cache}"
TARBALL="$CACHE/sandbox-rootfs-bookworm.tar"
log() { printf '\033[1;34m[sandbox-image]\033[0m %s\n' "$*"; }

command -v docker >/dev/null || { echo "docker CLI missing (apt-get install -y docker.io)" >&2; exit 1; }
bash "$ROOT/deploy/docker/rootfs.sh" "$TARBALL" python3
log "docker import -> $IMAGE"
docker import \
  --change 'USER 65534:65534' \
  --change 'WORKDIR /tmp' \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'ENTRYPOINT ["python3"]' \
  --change 'LABEL org.opencontainers.image.title=cgrpo-sandbox cgrpo.sandbox.image=1' \
  "$TARBALL" "$IMAGE" >/dev/null
docker run --rm --network none --cap-drop ALL --security-opt no-new-privileges --read-only \
  "$IMAGE" -I -c 'import ctypes, json, resource, select, sys; print("sandbox image ok: python", sys.version.split()[0])'
