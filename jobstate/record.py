"""A job's durable record: its run directory (``runs/JOB/``), written as the job goes and
read back by the dashboard when Redis no longer has the job.

Redis is the live view and may lose a job (a restart without persistence, the capped
lists, a flushed database); the run directory keeps everything, in files that need no
cgrpo to read::

    job.json        the job record: the fields of cgrpo:job:{id}, as JSON values
    metrics.jsonl   one line per training step (step, time, weight_version, METRIC_FIELDS)
    evals.jsonl     one line per held-out evaluation (step, split, steps_mode, pass_at_1, se, n, ...)
    events.jsonl    one line per event (time, level, message)
    rollout.json    the latest sampled completion (as cgrpo:job:{id}:rollout)
    tensorboard/    event files: train/<field> per step, eval/<split>/pass_at_1_<mode>[_se],
                    and the events and rollout samples as text (`tensorboard --logdir runs/JOB`)

Each line is flushed when written, so a job that crashes keeps its record up to its last
step. A resumed job appends; readers keep the last line of a repeated step, like Redis's.
"""

from __future__ import annotations

import json
import numbers
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from jobstate.keys import check_status, dumps, job_key, new_job_record, valid_job_id
from jobstate.readers import Records, parse_evals, parse_events, parse_job, parse_metrics, parse_rollout

JOB_FILE = "job.json"
ROLLOUT_FILE = "rollout.json"
TENSORBOARD_DIR = "tensorboard"
_LINES = ("metrics", "evals", "events")


def metric_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The curves of one step's metrics: ``train/<field>`` for every number but the step."""
    return {f"train/{k}": float(v) for k, v in metrics.items() if k not in ("step", "time") and _is_number(v)}


def eval_scalars(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The curves of one evaluation: ``eval/<split>/pass_at_1_<steps_mode>`` and its ``_se``."""
    tag = f"eval/{evaluation['split']}/pass_at_1_{evaluation['steps_mode']}"
    out = {tag: float(evaluation["pass_at_1"])}
    if _is_number(evaluation.get("se")):
        out[f"{tag}_se"] = float(evaluation["se"])
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# --------------------------------------------------------------------------- writer


class RunRecord:
    """Writes one job's run directory (see the module doc); one per job, in the driver.

    The methods mirror :class:`jobstate.JobState`'s, so :class:`jobstate.JobLog` can
    send every write to both."""

    def __init__(self, run_dir: Path | str, job_id: str) -> None:
        from jobstate.tensorboard_events import TensorBoardEvents  # here: readers never pay its import

        job_key(job_id)  # validates
        self.job_id, self.run_dir = job_id, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._job: dict[str, Any] = _load_json(self.run_dir / JOB_FILE) or {}  # a resumed job keeps its record
        step = self._job.get("step")
        self._step = int(step) if _is_number(step) else 0  # events are shown at the latest step
        self._lines = {name: open(self.run_dir / f"{name}.jsonl", "a", encoding="utf-8") for name in _LINES}
        self._tensorboard = TensorBoardEvents(self.run_dir / TENSORBOARD_DIR)

    # -- the job record -----------------------------------------------------------------

    def create(self, *, name: str = "", config: Mapping[str, Any] | None = None,
               total_steps: int | None = None, status: str = "pending", **fields: Any) -> None:
        """Start the record of a new job (as :meth:`JobState.create`)."""
        self.update(**new_job_record(self.job_id, name=name, config=config, total_steps=total_steps, status=status,
                                     **fields))

    def update(self, **fields: Any) -> None:
        """Set fields of job.json (``status``, ``export_path``, ...)."""
        check_status(fields)
        fields.setdefault("updated_at", time.time())
        with self._lock:
            self._job.update(json.loads(dumps(fields)))
            self._write_job()

    def set_status(self, status: str, error: str | None = None) -> None:
        self.update(status=status, **({"error": error} if error is not None else {}))

    def _write_job(self) -> None:  # caller holds self._lock
        path = self.run_dir / JOB_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._job, indent=1))
        os.replace(tmp, path)  # readers never see half a file

    # -- history --------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one step's metrics (with ``step``), and its curves."""
        record = {"time": time.time(), **metrics}
        step = int(metrics["step"])
        with self._lock:
            self._append("metrics", record)
            self._step = step
            self._job.update(step=step, updated_at=record["time"],
                             **({"weight_version": metrics["weight_version"]} if "weight_version" in metrics else {}))
            self._write_job()
            self._tensorboard.scalars(metric_scalars(metrics), step, record["time"])

    def log_eval(self, step: int, split: str, steps_mode: str, pass_at_1: float, n: int, **extra: Any) -> None:
        """Append one held-out evaluation, and its curves."""
        record = {"step": step, "split": split, "steps_mode": steps_mode, "pass_at_1": pass_at_1, "n": n,
                  "time": time.time(), **extra}
        with self._lock:
            self._append("evals", record)
            self._tensorboard.scalars(eval_scalars(record), step, record["time"])

    def event(self, message: str, level: str = "info") -> None:
        record = {"time": time.time(), "level": level, "message": message}
        with self._lock:
            self._append("events", record)
            self._tensorboard.text("events", f"{level}: {message}", self._step, record["time"])

    def set_rollout(self, sample: Mapping[str, Any]) -> None:
        """Replace rollout.json with the latest sample; TensorBoard keeps each one as text."""
        with self._lock:
            path = self.run_dir / ROLLOUT_FILE
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(dumps(dict(sample)))
            os.replace(tmp, path)
            tokens = sample.get("tokens") or []
            self._tensorboard.text(
                "rollout", f"task {sample.get('task_id')}, reward {sample.get('reward')}, {sample.get('status')}"
                           "\n\n```\n" + "".join(str(t) for t in tokens) + "\n```",
                int(sample.get("step") or self._step), time.time())

    def _append(self, name: str, record: Mapping[str, Any]) -> None:  # caller holds self._lock
        f = self._lines[name]
        f.write(dumps(record) + "\n")
        f.flush()

    def close(self) -> None:
        with self._lock:
            for f in self._lines.values():
                f.close()
            self._tensorboard.close()


# --------------------------------------------------------------------------- readers


def read_run_job(run_dir: Path) -> dict | None:
    """The job record of a run directory (typed as :func:`jobstate.read_job`), or None when
    the folder has no job.json; an unreadable job.json gives ``missing_record`` True."""
    path = run_dir / JOB_FILE
    if not valid_job_id(run_dir.name) or not path.is_file():
        return None
    return parse_job(run_dir.name, _load_json(path) or {})


def list_runs(root: Path, skip: set[str] = frozenset()) -> list[dict]:
    """The jobs recorded under ``root`` (one folder each), newest first, but those in ``skip``."""
    try:
        folders = [p for p in root.iterdir() if p.name not in skip]
    except OSError:
        return []
    jobs = [job for job in map(read_run_job, folders) if job is not None]
    jobs.sort(key=lambda j: j["created_at"] or 0.0, reverse=True)
    return jobs


def read_run_metrics(run_dir: Path, after_step: int | None = None) -> Records:
    return parse_metrics(_lines(run_dir / "metrics.jsonl"), after_step)


def read_run_evals(run_dir: Path) -> Records:
    return parse_evals(_lines(run_dir / "evals.jsonl"))


def read_run_events(run_dir: Path, limit: int = 100) -> Records:
    return parse_events(_lines(run_dir / "events.jsonl")[-max(1, limit):])


def read_run_rollout(run_dir: Path) -> Records:
    try:
        return parse_rollout((run_dir / ROLLOUT_FILE).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return Records()


def run_signature(run_dir: Path) -> str:
    """Changes whenever any file the dashboard reads from the run directory does."""
    stamps = []
    for name in (JOB_FILE, ROLLOUT_FILE, *(f"{n}.jsonl" for n in _LINES)):
        try:
            st = (run_dir / name).stat()
            stamps.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((name, None, None))
    return repr(stamps)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
