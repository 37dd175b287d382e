#!/usr/bin/env bash
# Installs everything, then runs the embedded demo: the shipped tiny dLLM trained by
# coupled-GRPO on the built-in tasks, on a local Ray cluster, with Redis and the dashboard.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec cgrpo demo "$@"
