"""Fetch the dashboard's charting library (uPlot) from the npm registry at install time.

Third-party code is never committed: ``scripts/setup.sh`` runs
``python -m dashboard.vendor``, which runs ``npm pack uplot@VERSION``,
checks the tarball against the pinned integrity hash and copies only the built files
(``uPlot.iife.min.js``, ``uPlot.min.css``) and the licence into the git-ignored
``static/vendor/`` folder. The app tells the user when they are missing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

UPLOT_VERSION = "1.6.32"
UPLOT_INTEGRITY = ("sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/"
                   "ep3tOkyTxpiQIw==")
VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
# tarball member -> file name in VENDOR_DIR
FILES = {
    "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "uPlot.LICENSE",
}


class VendorError(RuntimeError):
    """npm is missing, the registry refused, or the tarball did not match its pin."""


def is_installed(vendor_dir: Path = VENDOR_DIR) -> bool:
    """True when every vendored file is present and non-empty."""
    return all((vendor_dir / name).is_file() and (vendor_dir / name).stat().st_size > 0
               for name in FILES.values())


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def install(vendor_dir: Path = VENDOR_DIR, *, force: bool = False) -> Path:
    """Download uPlot with ``npm pack`` and copy its dist files into ``vendor_dir``."""
    if is_installed(vendor_dir) and not force:
        return vendor_dir
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError("npm not found: install Node.js/npm (Debian package 'npm') "
                          "and run `python -m dashboard.vendor` again")
    with tempfile.TemporaryDirectory(prefix="cgrpo-vendor-") as tmp:
        proc = subprocess.run([npm, "pack", f"uplot@{UPLOT_VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=300)
        tarballs = list(Path(tmp).glob("uplot-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise VendorError(f"`npm pack uplot@{UPLOT_VERSION}` failed: "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        got = _integrity(tarballs[0])
        if got != UPLOT_INTEGRITY:
            raise VendorError(f"uplot@{UPLOT_VERSION} tarball integrity {got} does not match "
                              f"the pinned {UPLOT_INTEGRITY}")
        vendor_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarballs[0]) as tar:
            for member, name in FILES.items():
                src = tar.extractfile(member)
                if src is None:
                    raise VendorError(f"{member} missing from uplot@{UPLOT_VERSION}")
                (vendor_dir / name).write_bytes(src.read())
    return vendor_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="download again even if present")
    args = parser.parse_args(argv)
    try:
        path = install(force=args.force)
    except (VendorError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"uPlot {UPLOT_VERSION} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
