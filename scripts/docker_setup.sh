#!/usr/bin/env bash
# Docker engine + sandbox image for the `docker` sandbox backend (called by scripts/setup.sh,
# step 5). Safe to run again: each step is skipped when already done.
#   1. the engine binaries (apt-get install docker.io, as root);
#   2. an engine that answers: when none does, start dockerd in the background (as root);
#   3. the sandbox image (cgrpo-sandbox:1, CGRPO_SANDBOX_IMAGE overrides), built without a
#      registry by deploy/docker/sandbox/build.sh (debootstrap + docker import, ~1 min the
#      first time; its root-filesystem tarball is cached in .cache/ for later imports);
#   4. only with CGRPO_STACK_TEST=1 (scripts/test.sh sets it; tests/test_deploy_stack.py):
#      the compose stack's images (cgrpo-runtime:0.1.0, cgrpo-redis:7) by deploy/build.sh,
#      with no network inside the build (~10 min the first time on 2 cores).
# Exits non-zero with a message saying what is missing when no engine can run here; the
# sandbox then uses its jail backend (`auto` says so).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
IMAGE="${CGRPO_SANDBOX_IMAGE:-cgrpo-sandbox:1}"
LOG_DIR="$ROOT/.cache"
mkdir -p "$LOG_DIR"
log() { printf '\033[1;34m[docker]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[docker]\033[0m %s\n' "$*" >&2; exit 1; }
answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# 1. Binaries.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "apt-get install docker.io debootstrap"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
      docker.io debootstrap >/dev/null || fail "apt-get install docker.io failed"
  else
    fail "no Docker engine installed and not root: install docker.io, or use the jail backend"
  fi
fi

# 2. An engine that answers.
if ! answers; then
  [ "$(id -u)" = 0 ] || fail "no Docker engine answers and only root can start dockerd here"
  log "starting dockerd (log: .cache/dockerd.log)"
  setsid nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do answers && break; sleep 0.5; done
  if ! answers; then
    tail -5 "$LOG_DIR/dockerd.log" >&2 || true
    fail "dockerd did not answer within 30 s (see .cache/dockerd.log); the jail backend will be used"
  fi
fi
log "engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"

# 3. The sandbox image.
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE present"
else
  timeout 420 bash "$ROOT/deploy/docker/sandbox/build.sh" "$IMAGE" \
    || fail "building the sandbox image $IMAGE failed (see .cache/debootstrap.log)"
fi

# 4. The compose stack's images, for the stack test (scripts/test.sh asks for them).
if [ "${CGRPO_STACK_TEST:-}" = 1 ]; then
  if docker image inspect "${CGRPO_IMAGE:-cgrpo-runtime:0.1.0}" >/dev/null 2>&1 \
     && docker image inspect "${CGRPO_REDIS_IMAGE:-cgrpo-redis:7}" >/dev/null 2>&1; then
    log "stack images present (bash deploy/build.sh rebuilds them)"
  else
    timeout 2400 bash "$ROOT/deploy/build.sh" \
      || log "warning: building the compose stack's images failed (see above); tests/test_deploy_stack.py will try again"
  fi
fi
