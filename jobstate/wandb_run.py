"""The job's curves in Weights & Biases, when its ``wandb:`` section switches them on: the
same ``train/<field>`` and ``eval/...`` curves as TensorBoard, in a W&B run named after the
job whose files stay in the run directory (``wandb/``). Offline mode needs no network:
``wandb sync runs/JOB/wandb/offline-run-*`` uploads it later."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from jobstate.config import WandbConfig
from jobstate.keys import StateError
from jobstate.record import eval_scalars, metric_scalars


class WandbRun:
    def __init__(self, run: Any) -> None:
        self._run = run

    @classmethod
    def start(cls, cfg: WandbConfig, job_id: str, run_dir: Path, config: Mapping[str, Any]) -> "WandbRun":
        """A W&B run for the job (``id`` = job id, so a resumed job continues it online)."""
        try:
            import wandb

            run = wandb.init(mode=cfg.mode, project=cfg.project, entity=cfg.entity, tags=cfg.tags or None,
                             name=job_id, id=job_id, resume="allow" if cfg.mode == "online" else None,
                             dir=str(run_dir), config=dict(config), reinit="create_new",
                             settings=wandb.Settings(silent=True, console="off"))
        except Exception as exc:  # noqa: BLE001 - whatever W&B raises, the job gets one line
            raise StateError(f"wandb: W&B could not start a run ({type(exc).__name__}: {exc}); for wandb.mode: "
                             "online set WANDB_API_KEY (or run `wandb login`), or use wandb.mode: offline") from None
        return cls(run)

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        self._run.log(metric_scalars(metrics), step=int(metrics["step"]))

    def log_eval(self, **evaluation: Any) -> None:
        self._run.log(eval_scalars(evaluation), step=int(evaluation["step"]))

    def close(self) -> None:
        self._run.finish()
