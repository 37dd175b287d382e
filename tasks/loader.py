"""One entry point for every task source: ``load_tasks(source, split)``.

Sources: ``builtin`` (splits ``train``/``validation``/``heldout``), ``humaneval``, ``mbpp`` (evaluation
only), ``codeio`` (built rows, see ``cgrpo data build-codeio``) and ``jsonl:PATH``. The CLI's
``--split`` names (``heldout``, ``validation``, ``train``, ``humaneval``, ``mbpp``, ``codeio``, ``jsonl:PATH``)
map onto these with :func:`resolve_split`.
"""

from __future__ import annotations

from tasks import builtin, codeio, sources
from tasks.config import TasksConfig
from tasks.record import LoadReport, Task, TaskError

SOURCES = ("builtin", "humaneval", "mbpp", "codeio", "jsonl:PATH")
SPLIT_NAMES = ("heldout", "validation", "train", "humaneval", "mbpp", "codeio", "jsonl:PATH")
EVAL_ONLY = ("humaneval", "mbpp")


def resolve_split(name: str) -> tuple[str, str | None]:
    """Map a CLI split name to (source, split): ``heldout`` -> (builtin, heldout), ..."""
    if name in builtin.SPLITS:
        return "builtin", name
    if name.startswith("builtin/") and name.split("/", 1)[1] in builtin.SPLITS:
        return "builtin", name.split("/", 1)[1]
    if name in ("humaneval", "mbpp", "codeio"):
        return name, None
    if name.startswith("jsonl:") and len(name) > len("jsonl:"):
        return name, None
    raise TaskError(f"split {name!r} is unknown; use one of {', '.join(SPLIT_NAMES)}")


def load_report(source: str, split: str | None = None, *, seed: int = builtin.DEFAULT_SEED) -> LoadReport:
    """Load one source and keep every rejected row with its file, line and reason."""
    if source == "builtin":
        report = LoadReport(f"builtin/{split or 'train'}")
        report.tasks = builtin.builtin_tasks(split or "train", seed)
        return report
    if split not in (None, "train" if source == "codeio" else None):
        raise TaskError(f"source {source!r} has no split {split!r}; only builtin has train/validation/heldout splits")
    if source == "humaneval":
        return sources.load_humaneval()
    if source == "mbpp":
        return sources.load_mbpp()
    if source == "codeio":
        return codeio.load_codeio()
    if source.startswith("jsonl:") and len(source) > len("jsonl:"):
        return sources.load_jsonl(source[len("jsonl:"):])
    raise TaskError(f"task source {source!r} is unknown; use one of {', '.join(SOURCES)}")


def load_tasks(source: str, split: str | None = None, *, seed: int = builtin.DEFAULT_SEED,
               limit: int | None = None) -> list[Task]:
    """The accepted tasks of a source (rejections are dropped; see :func:`load_report`).

    ``source`` may also be a CLI split name (``heldout``, ``validation``, ``train``), which implies builtin.
    Raises :class:`TaskError` when the source is unknown, its file is missing, or (CodeI/O)
    nothing has been built yet.
    """
    if split is None and source in builtin.SPLITS:
        source, split = "builtin", source
    report = load_report(source, split, seed=seed)
    if source == "codeio":
        codeio.require_built(report)
    return report.tasks[:limit] if limit is not None else report.tasks


def load_job_tasks(config: TasksConfig) -> tuple[list[Task], list[Task]]:
    """(training tasks, evaluation tasks) of a job. The built-in source gives its train and
    held-out splits (filtered by ``max_difficulty``); any other source is used whole."""

    def tasks_of(source: str, split: str) -> list[Task]:
        if source != "builtin":
            return load_tasks(source, None)
        tasks = load_tasks("builtin", split)
        if config.max_difficulty:
            tasks = [t for t in tasks if (builtin.difficulty(t.task_id) or 1) <= config.max_difficulty]
        return tasks

    train = tasks_of(config.train, "train")[: config.train_limit]
    if not train:
        raise TaskError(f"tasks.train: source {config.train!r} has no tasks"
                        + (f" up to difficulty {config.max_difficulty}" if config.max_difficulty else ""))
    return train, tasks_of(config.heldout, "heldout")
