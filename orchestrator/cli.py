"""`cgrpo` command line: one sub-command family per area, each registered by its own module.

Every area keeps its commands next to its code (``sandbox/cli.py`` ...) and exposes
``register(subparsers)``; this file only assembles them and turns user errors
(:class:`errors.CgrpoError`) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from errors import CgrpoError

# Modules that contribute sub-commands, in the order `--help` lists them.
COMMAND_MODULES = [
    "orchestrator.local_stack",   # demo
    "orchestrator.job_commands",  # submit, status, list, logs, stop, scale
    "orchestrator.driver",        # run
    "tasks.cli",                  # data stats, data build-codeio
    "evaluation.cli",             # eval
    "modelprep.cli",              # pretrain, adapt
    "sandbox.cli",                # sandbox run
    "dashboard.cli",              # dashboard
    "orchestrator.experiment",    # experiment
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgrpo",
        description="Coupled-GRPO for masked diffusion language models of code: "
        "roll out on Ray, score in a sandbox, update with DeepSpeed, watch on a dashboard.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that area is not installed in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CgrpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
