"""``cgrpo data stats`` and ``cgrpo data build-codeio``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from tasks.record import LoadReport, TaskError

SPLIT_HELP = "heldout | validation | train (built-in), humaneval, mbpp, codeio, or jsonl:PATH"


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and prepare task sources",
                                 description="Task sources: built-in generator, HumanEval, MBPP, CodeI/O, user JSONL.")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    stats = data_sub.add_parser("stats", help="rows loaded / rejected per source, with the first reasons",
                                description="Load every task source and print how many rows were loaded and "
                                "rejected (with file:line and reason) per source.")
    stats.add_argument("--jsonl", nargs="*", default=[], metavar="PATH", help="also check these user JSONL files")
    stats.add_argument("--reasons", type=int, default=3, metavar="N", help="rejection reasons shown per source")
    stats.add_argument("--seed", type=int, default=0, help="built-in generator seed (default 0: the fixed splits)")
    stats.add_argument("--json", metavar="PATH", help="also write the counts as JSON ('-' for stdout)")
    stats.add_argument("--run-canonical", action="store_true",
                       help="also run every canonical solution in the sandbox: how many pass, and how many "
                       "fail only because a test needs more than plain data (harness limitation)")
    stats.add_argument("--workers", type=int, default=2, help="sandbox runs in parallel for --run-canonical")
    stats.add_argument("--backend", default="auto", help="sandbox backend for --run-canonical (default auto)")
    stats.set_defaults(func=_stats)

    build = data_sub.add_parser("build-codeio", help="make CodeI/O tests by running reference solutions in the sandbox",
                                description="Run each standard-library-only CodeI/O reference solution on generated "
                                "inputs in the sandbox and append the resulting tasks to data/codeio/built.jsonl. "
                                "Incremental: already built (or rejected) items are skipped.")
    build.add_argument("--limit", type=int, default=None,
                       help="items to build in this call (default: all not yet built; ~2 min per 1,000 on 2 cores)")
    build.add_argument("--workers", type=int, default=2, help="sandbox runs in parallel (default 2)")
    build.set_defaults(func=_build_codeio)



# ---------------------------------------------------------------- data stats

def _collect(args) -> list[tuple[str, LoadReport | None, str]]:
    from tasks import builtin, loader  # noqa: PLC0415

    out: list[tuple[str, LoadReport | None, str]] = []
    specs = [("builtin", "train"), ("builtin", "validation"), ("builtin", "heldout"), ("humaneval", None), ("mbpp", None), ("codeio", None)]
    specs += [(f"jsonl:{p}", None) for p in args.jsonl]
    for source, split in specs:
        name = f"{source}/{split}" if split else source
        try:
            report = loader.load_report(source, split, seed=args.seed)
        except TaskError as exc:
            out.append((name, None, str(exc)))
            continue
        note = ""
        if source == "builtin":
            levels = Counter(builtin.difficulty(t.task_id, args.seed) for t in report.tasks)
            note = "levels " + " ".join(f"{lvl}:{levels[lvl]}" for lvl in sorted(levels))
        elif source == "codeio":
            c = report.counts
            note = f"raw {c['raw']}, stdlib-only {c['stdlib']}, built {c['built']}, not built yet {c['not_built']}"
            if not c["built"]:
                note += " (run `cgrpo data build-codeio`)"
        out.append((name, report, note))
    return out


def _stats(args) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    rows = _collect(args)
    table = Table(title="task sources", show_lines=True)
    for col in ("source", "loaded", "rejected", "notes / first rejections"):
        table.add_column(col, overflow="fold")
    summary = {}
    for name, report, note in rows:
        if report is None:
            table.add_row(name, "-", "-", f"[red]{note}[/red]")
            summary[name] = {"error": note}
            continue
        reasons = [str(r) for r in report.rejected[: args.reasons]]
        counted = Counter(r.reason.split(" (")[0] if not r.reason.startswith("duplicate") else "duplicate"
                          for r in report.rejected)
        canonical = _run_canonical(report, args) if args.run_canonical else None
        if canonical:
            note = "\n".join(filter(None, [note, _canonical_line(canonical)]))
        text = "\n".join(filter(None, [note] + [f"{n} x {why}" for why, n in counted.most_common(4)] + reasons))
        table.add_row(name, str(len(report.tasks)), str(len(report.rejected)), text)
        summary[name] = {"loaded": len(report.tasks), "rejected": len(report.rejected), **report.counts,
                         "rejections": [{"where": r.where, "reason": r.reason} for r in report.rejected[: args.reasons]]}
        if canonical:
            summary[name]["canonical"] = canonical
    Console(stderr=args.json == "-").print(table)
    write_json(args.json, summary)
    return 0


def _run_canonical(report: LoadReport, args) -> dict | None:
    """Every canonical solution of a source through the sandbox: passed, failed, and failed
    only because a test needs more than plain data to reach the program."""
    from tasks.execute import HARNESS_LIMITED, run_completions  # noqa: PLC0415

    tasks = [t for t in report.tasks if t.canonical_solution is not None]
    if not tasks:
        return None
    results = run_completions([(t, t.canonical_solution) for t in tasks], workers=args.workers,
                              backend=args.backend)
    failing = [(t.task_id, status) for t, (ok, status) in zip(tasks, results) if not ok]
    return {"run": len(tasks), "passed": len(tasks) - len(failing),
            "harness_limited": sum(status == HARNESS_LIMITED for _, status in failing),
            "failing": [{"task_id": tid, "status": status} for tid, status in failing[:args.reasons]]}


def _canonical_line(c: dict) -> str:
    line = f"canonical solutions: {c['passed']}/{c['run']} pass"
    if c["harness_limited"]:
        line += f", {c['harness_limited']} need more than plain data (harness limitation)"
    return line + "".join(f"\n  fails: {f['task_id']} ({f['status']})" for f in c["failing"])


def _build_codeio(args) -> int:
    from tasks import codeio  # noqa: PLC0415

    if args.limit is not None and args.limit < 1:
        raise TaskError(f"--limit must be >= 1 (got {args.limit})")
    counts = codeio.build_codeio(args.limit, workers=args.workers, progress=True)
    report = codeio.load_codeio()
    print(f"built {counts['built']}, rejected {counts['rejected']} in this call; "
          f"{report.counts['built']} CodeI/O tasks ready, {report.counts['not_built']} not built yet "
          f"({codeio.built_path()})")
    return 0


def write_json(target: str | None, payload) -> None:
    if not target:
        return
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text)
