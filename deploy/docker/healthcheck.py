#!/usr/bin/env python3
"""Container health probe: exit 0 when every URL answers HTTP 2xx within the timeout.

Why a script: the slim and CUDA base images have neither curl nor wget, and the
checks the stack needs are plain HTTP GETs (the ones KubeRay's own probes use):
  Ray head    http://127.0.0.1:8265/api/gcs_healthz        (GCS alive)
  any Ray node http://127.0.0.1:52365/api/local_raylet_healthz (this node's raylet alive)
  dashboard   http://127.0.0.1:8600/                       (cgrpo dashboard serving)

    cgrpo-healthcheck URL [URL ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float) -> str | None:
    """Return None when `url` answers 2xx, else a one-line reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if 200 <= response.status < 300:
                return None
            return f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per URL (default 3)")
    args = parser.parse_args(argv)
    failures = [reason for url in args.urls if (reason := probe(url, args.timeout))]
    for reason in failures:
        print(f"unhealthy: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
