"""What kind of mistakes a model makes on the built-in tasks of a split (docs/learning.md).

One completion per task at T=0.2, run in the sandbox. A failure whose code equals the task's
canonical solution once every number and quoted string is blanked out has the right shape and
a wrong slot value (a constant or letter not copied from the docstring); the rest either did
not run or got the logic wrong.

    python scripts/failure_kinds.py [--model models/tiny-dllm] [--split heldout|validation]

Last line: the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dllm  # noqa: E402
from errors import CgrpoError  # noqa: E402
from tasks.builtin import builtin_problems  # noqa: E402
from evaluation.evaluate import generate_completions, truncate_completion  # noqa: E402
from sandbox.limits import Limits  # noqa: E402
from sandbox.pool import SandboxWorker, TaskView  # noqa: E402
from sandbox.rewards import RewardConfig  # noqa: E402


def shape(code: str) -> str:
    """The code with blank lines, trailing spaces, numbers and quoted strings neutralised."""
    text = "\n".join(line.rstrip() for line in code.strip("\n").splitlines() if line.strip())
    return re.sub(r"'[^']*'|\"[^\"]*\"", "S", re.sub(r"\d+", "N", text))


def kind(result, completion: str, canonical: str) -> str:
    if result.all_passed:
        return "passed"
    if result.reason not in ("passed", "failed"):
        return f"did not run ({result.reason})"
    return "right shape, wrong constant or letter" if shape(completion) == shape(canonical) else "other logic error"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/tiny-dllm", help="model folder (default: the shipped model)")
    parser.add_argument("--split", default="heldout", choices=["heldout", "validation", "train"],
                        help="built-in split (default heldout; choose settings on validation)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        model, tokenizer = dllm.load_model(args.model).eval(), dllm.load_tokenizer(args.model)
    except CgrpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = builtin_problems(args.split)
    tasks = [p.task for p in problems]
    completions, _ = generate_completions(model, tokenizer, tasks, n=1, temperature=0.2, steps=48,
                                          max_new_tokens=48, seed=args.seed, progress=True)
    texts = [truncate_completion(c[0]) for c in completions]
    sandbox = SandboxWorker("auto", Limits(), RewardConfig())
    try:
        results = sandbox.score([(TaskView(t.prompt, t.entry_point, t.test), x) for t, x in zip(tasks, texts)])
    finally:
        sandbox.shutdown()
    counts = Counter(kind(r, x, t.canonical_solution) for r, x, t in zip(results, texts, tasks))
    print(json.dumps(dict(counts.most_common())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
