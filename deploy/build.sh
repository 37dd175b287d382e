#!/usr/bin/env bash
# Build the images the compose stack runs, with no network inside any build or container:
# everything from outside is fetched on the host first.
#
#   bash deploy/build.sh                # cgrpo-runtime:0.1.0 and cgrpo-redis:7
#
#   1. base images: Debian bookworm made with debootstrap on the host and `docker import`ed
#      (deploy/docker/rootfs.sh): cgrpo-runtime-base:bookworm (python3, venv, bubblewrap,
#      CA certificates) and cgrpo-redis:7 (Debian's redis-server, runs as `redis`, data in
#      /var/lib/redis). Root filesystem tarballs are cached in .cache/.
#   2. the wheelhouse .cache/wheelhouse: torch (CPU wheel unless CGRPO_TORCH_INDEX_URL
#      names another index), every dependency pinned in pyproject.toml, DeepSpeed built as a
#      wheel, setuptools for the editable install; from the host's pip.
#   3. the dashboard's charting library (python -m dashboard.vendor, npm on the host) and
#      the data files (scripts/fetch_data.py --only $CGRPO_DATA into .cache/image-data).
#   4. `docker build` of deploy/docker/runtime.Dockerfile from a tar stream holding only
#      CONTEXT below (the legacy builder ignores .dockerignore files and would otherwise
#      upload the whole checkout, .venv included), then a smoke run of the image.
#
# Environment: CGRPO_IMAGE (cgrpo-runtime:0.1.0), CGRPO_REDIS_IMAGE (cgrpo-redis:7),
# CGRPO_BASE_IMAGE (another base: then apt in the build installs what it lacks),
# CGRPO_TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cu128 for CUDA wheels),
# CGRPO_DS_ACCELERATOR (cpu), CGRPO_DATA ("humaneval mbpp codeio"; empty for none),
# CGRPO_PYTHON (the host interpreter that fills the wheelhouse: same minor version as the
# base's python3). Each step is skipped when its output is up to date.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
IMAGE="${1:-${CGRPO_IMAGE:-cgrpo-runtime:0.1.0}}"
REDIS_IMAGE="${CGRPO_REDIS_IMAGE:-cgrpo-redis:7}"
OWN_BASE=cgrpo-runtime-base:bookworm
BASE_IMAGE="${CGRPO_BASE_IMAGE:-$OWN_BASE}"
CACHE="$ROOT/.cache"
WHEELS="$CACHE/wheelhouse"
DATA_DIR="$CACHE/image-data"
PY="${CGRPO_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3)}"
# What the build sees: exactly the COPY sources of runtime.Dockerfile (tests check this).
CONTEXT=(pyproject.toml README.md errors.py dllm rollout sandbox learner tasks evaluation modelprep jobstate
         dashboard orchestrator models deploy/examples deploy/preflight.py deploy/docker/runtime.Dockerfile
         deploy/docker/healthcheck.py .cache/wheelhouse .cache/image-data)
log() { printf '\033[1;34m[build]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[build]\033[0m %s\n' "$*" >&2; exit 1; }

timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || fail "no Docker engine answers (bash scripts/docker_setup.sh starts one)"

# 1. Base images from debootstrap.
import_image() {  # IMAGE PACKAGES CHANGE...
  local image="$1" packages="$2"; shift 2
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  local tarball="$CACHE/rootfs-${image//[:\/]/-}.tar"
  bash deploy/docker/rootfs.sh "$tarball" "$packages"
  log "docker import -> $image"
  local changes=()
  for c in "$@"; do changes+=(--change "$c"); done
  docker import "${changes[@]}" "$tarball" "$image" >/dev/null
}
if [ "$BASE_IMAGE" = "$OWN_BASE" ]; then
  import_image "$OWN_BASE" python3,python3-venv,bubblewrap,ca-certificates,procps \
    'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
fi
import_image "$REDIS_IMAGE" redis-server,redis-tools \
  'USER redis' 'WORKDIR /var/lib/redis' 'EXPOSE 6390' 'ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin' \
  'CMD ["redis-server", "--port", "6390", "--dir", "/var/lib/redis"]'

# 2. The wheelhouse, refilled when pyproject's dependencies or the torch index change.
want="$("$PY" - <<'EOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(sorted(deps)))
EOF
)"
stamp="$WHEELS/.filled-$(printf '%s %s' "$want" "${CGRPO_TORCH_INDEX_URL:-}" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "wheelhouse: pip wheel (host pip) -> .cache/wheelhouse"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  index=()
  [ -n "${CGRPO_TORCH_INDEX_URL:-}" ] && index=(--extra-index-url "$CGRPO_TORCH_INDEX_URL")
  torch_pin="$(tr ' ' '\n' <<<"$want" | grep '^torch==')"
  # torch alone first (from the chosen index), then the rest resolving against it.
  # shellcheck disable=SC2086  # one requirement per word
  { "$PY" -m pip wheel --no-deps -w "$WHEELS" "${index[@]}" "$torch_pin" \
    && "$PY" -m pip wheel -w "$WHEELS" --find-links "$WHEELS" "${index[@]}" $want "setuptools>=77"; } \
    >"$CACHE/wheelhouse.log" 2>&1 \
    || { grep -v "^WARNING: Location" "$CACHE/wheelhouse.log" | tail -20 >&2; fail "pip wheel failed (the host needs PyPI)"; }
  # The host resolved environment markers for its own Python (e.g. 3.11.7): let the base
  # image's pip resolve offline against the wheelhouse, and add what it finds missing
  # for its Python (e.g. async-timeout, which redis needs below 3.11.3).
  for _ in 1 2 3 4 5 6 7 8; do
    # shellcheck disable=SC2086
    missing="$(docker run --rm --network none -v "$WHEELS:/wheelhouse:ro" --entrypoint bash "$BASE_IMAGE" -c \
      "python3 -m venv /tmp/v && /tmp/v/bin/pip install -q --dry-run --no-index --find-links /wheelhouse $want 'setuptools>=77'" \
      2>&1 | sed -n 's/.*No matching distribution found for \(.*\)$/\1/p' | head -1 || true)"
    [ -z "$missing" ] && break
    log "wheelhouse: adding ${missing%%;*} for the base image's Python"
    "$PY" -m pip wheel -w "$WHEELS" --find-links "$WHEELS" "${index[@]}" "${missing%%;*}" >>"$CACHE/wheelhouse.log" 2>&1 \
      || fail "pip wheel ${missing%%;*} failed (see .cache/wheelhouse.log)"
  done
  [ -z "$missing" ] || fail "the wheelhouse still lacks $missing for $BASE_IMAGE's Python"
  touch "$stamp"
fi
log "wheelhouse: $(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"

# 3. Charting library and data files.
"$PY" -m dashboard.vendor >/dev/null 2>&1 \
  || log "warning: uPlot not vendored (npm?); the image's dashboard shows tables without charts"
mkdir -p "$DATA_DIR"
if [ -n "${CGRPO_DATA-humaneval mbpp codeio}" ]; then
  # shellcheck disable=SC2086  # data set names
  CGRPO_DATA_DIR="$DATA_DIR" "$PY" scripts/fetch_data.py --only ${CGRPO_DATA-humaneval mbpp codeio} >/dev/null \
    || fail "scripts/fetch_data.py failed (the host needs PyPI)"
fi

# 4. The image, from exactly CONTEXT, labelled with their digest (tests rebuild a stale one).
digest="$("$PY" deploy/stack.py digest)"
log "docker build $IMAGE (base $BASE_IMAGE; context: ${#CONTEXT[@]} paths)"
tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -f - "${CONTEXT[@]}" \
  | nice -n 10 docker build -f deploy/docker/runtime.Dockerfile -t "$IMAGE" --label "cgrpo.sources=$digest" \
      --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg DS_ACCELERATOR="${CGRPO_DS_ACCELERATOR:-cpu}" - \
      >"$CACHE/runtime-build.log" 2>&1 \
  || { tail -30 "$CACHE/runtime-build.log" >&2; fail "docker build failed (log: .cache/runtime-build.log)"; }
docker run --rm --network none "$IMAGE" python -c \
  "import torch, ray, deepspeed, transformers, orchestrator.cli; print('image ok: torch', torch.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)" \
  | tail -1
docker run --rm --network none --entrypoint redis-server "$REDIS_IMAGE" --version
log "done: $IMAGE, $REDIS_IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f GB", $1/1e9}'))"
