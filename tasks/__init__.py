"""Task sources in one record format (HumanEval's), the loader with row-level validation,
and pass@k evaluation. See docs/tasks.md.

    from tasks import load_tasks
    train = load_tasks("builtin", "train")      # or "validation", "heldout", "humaneval", "mbpp", "codeio", "jsonl:PATH"
"""

from tasks.builtin import builtin_problems, builtin_tasks, difficulty
from tasks.loader import EVAL_ONLY, SOURCES, SPLIT_NAMES, load_job_tasks, load_report, load_tasks, resolve_split
from tasks.record import LoadReport, Rejection, Task, TaskError, data_dir, program_for, validate_row

__all__ = [
    "EVAL_ONLY", "SOURCES", "SPLIT_NAMES", "LoadReport", "Rejection", "Task", "TaskError",
    "builtin_problems", "builtin_tasks", "data_dir", "difficulty", "load_job_tasks", "load_report", "load_tasks",
    "program_for", "resolve_split", "validate_row",
]
