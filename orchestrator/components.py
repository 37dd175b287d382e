"""The job's moving parts, built from the config, and the glue between their formats.

Each constructor here receives only its slice of the job config. :class:`Parts` is what
the step loop talks to: rollout pool, sandbox pool, learner group, and the few
operations that span two of them (weight push, checkpoint, learner restart, heartbeats).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch

from dllm import load_tokenizer
from learner.batch import RolloutBatch, collate, completion_mask_from_eos
from learner.group import LearnerGroup
from learner.grpo import group_advantages
from orchestrator.config import ConfigError, JobConfig
from orchestrator.state import JobState
from orchestrator.tasks import load_tasks
from rollout.pool import RolloutPool
from sandbox import Limits
from sandbox.pool import SandboxPool
from sandbox.rewards import RewardConfig


def reward_dict(result) -> dict:
    """A sandbox RewardResult as the plain dict the loop and Redis use."""
    exec_result = getattr(result, "result", None)
    report = {
        "reason": result.reason,
        "tests_passed": getattr(exec_result, "tests_passed", 0),
        "tests_total": getattr(exec_result, "tests_total", 0),
        "stderr": (getattr(exec_result, "stderr", "") or "")[-500:],
    }
    return {"reward": float(result.reward), "all_passed": bool(result.all_passed),
            "pass_fraction": float(result.pass_fraction),
            "status": getattr(exec_result, "status", "error") if exec_result else "error", "report": report}


def load_job_tasks(cfg: JobConfig) -> tuple[list, list]:
    """(training tasks, held-out evaluation tasks) for the job."""
    train = _tasks(cfg.tasks.train, "train", cfg)
    if cfg.tasks.train_limit:
        train = train[: cfg.tasks.train_limit]
    heldout = _tasks(cfg.tasks.heldout, "heldout", cfg)[: cfg.run.eval_tasks]
    if not train:
        raise ConfigError(f"tasks.train: source {cfg.tasks.train!r} has no tasks")
    return train, heldout


def _tasks(source: str, split: str, cfg: JobConfig) -> list:
    """Built-in tasks have train/held-out splits; any other source is used whole."""
    from orchestrator.tasks.builtin import difficulty
    if source != "builtin":
        return load_tasks(source, None)
    tasks = load_tasks("builtin", split)
    if cfg.tasks.max_difficulty:
        tasks = [t for t in tasks if (difficulty(t.task_id) or 1) <= cfg.tasks.max_difficulty]
    return tasks


def learner_batch(batch, cfg: JobConfig, pad_token_id: int, eos_token_id: int | None) -> RolloutBatch:
    """Rollouts + rewards → the learner's batch (advantages within each prompt's group)."""
    rewards = torch.tensor([r["reward"] for r in batch.rewards], dtype=torch.float32)
    advantages = group_advantages(rewards, cfg.rollout.num_generations, scale_rewards=cfg.grpo.scale_rewards)
    rows = []
    for rollout, advantage in zip(batch.rollouts, advantages):
        seq = torch.tensor([rollout["prompt_ids"] + rollout["completion_ids"]], dtype=torch.long)
        plen = len(rollout["prompt_ids"])
        rows.append(RolloutBatch(sequences=seq, attention_mask=torch.ones_like(seq), prompt_len=plen,
                                 completion_mask=completion_mask_from_eos(seq, plen, eos_token_id),
                                 advantages=advantage.view(1), step=batch.step))
    return collate(rows, pad_token_id=pad_token_id)


def latest_checkpoint(out_dir: Path) -> Path | None:
    checkpoints = sorted((out_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in checkpoints if (p / "COMPLETE").exists()]
    return complete[-1] if complete else None


def sandbox_limits(cfg: JobConfig) -> Limits:
    s = cfg.sandbox
    return Limits(wall_s=s.timeout_s, cpu_s=s.timeout_s, memory_mb=s.memory_mb)


def reward_config(cfg: JobConfig) -> RewardConfig:
    s = cfg.sandbox
    return RewardConfig(code_weight=s.code_weight, format_weight=s.format_weight, all_pass=s.all_pass)


def grpo_config(cfg: JobConfig) -> dict:
    """The learner's slice of the job: the grpo section plus the optimiser/engine fields."""
    g, lr = cfg.grpo, cfg.learner
    return {
        "estimator": g.estimator, "num_pairs": g.num_pairs, "t_range": (g.t_low, g.t_high),
        "p_mask_prompt": g.p_mask_prompt, "d1_num_passes": g.d1_passes, "random_masking": g.random_masking,
        "beta": g.beta, "kl_clamp": g.kl_clamp, "ref_sync_every": g.ref_sync_every, "epsilon": g.epsilon, "num_iterations": g.num_iterations,
        "scale_rewards": g.scale_rewards, "loss_normalisation": g.loss_normalisation,
        "num_generations": cfg.rollout.num_generations,
        "lr": lr.lr, "max_grad_norm": lr.max_grad_norm, "weight_decay": lr.weight_decay,
        "zero_stage": lr.zero_stage, "gradient_accumulation_steps": lr.gradient_accumulation_steps,
        "total_steps": cfg.run.steps, "seed": cfg.run.seed,
    }


def make_learner(cfg: JobConfig) -> LearnerGroup:
    return LearnerGroup(cfg.model.path, grpo_config(cfg), num_workers=cfg.learner.workers,
                        num_gpus_per_worker=cfg.learner.num_gpus, num_cpus_per_worker=cfg.learner.num_cpus,
                        resources=cfg.learner.resources or None, placement_strategy=cfg.learner.placement)


@dataclass
class Parts:
    cfg: JobConfig
    rollout: RolloutPool
    sandbox: SandboxPool
    learner: LearnerGroup
    tokenizer: object
    restarts: dict = field(default_factory=dict)
    _pids: dict = field(default_factory=dict)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def tokenizer_decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def push_weights(self, version: int) -> None:
        """Learner rank 0 puts the weights in the object store once; every rollout actor reads them."""
        ref = self.learner.get_weights_ref(version)
        self.rollout.push_weights(version, ref)

    def save_checkpoint(self, out_dir: Path, step: int, cursor: int) -> Path:
        path = out_dir / "checkpoints" / f"step-{step}"
        self.learner.save(str(path), {"step": step, "cursor": cursor})
        (path / "COMPLETE").write_text(str(time.time()))
        return path

    def restart_learner(self, out_dir: Path, cfg: JobConfig) -> tuple[int, int]:
        """A fresh learner group from the last complete checkpoint (or the initial model)."""
        try:
            self.learner.shutdown()
        except Exception:  # noqa: BLE001 - the group is broken already; we only free what is left
            pass
        self.learner = make_learner(cfg)
        checkpoint = latest_checkpoint(out_dir)
        if checkpoint is None:
            return 0, 0
        extra = self.learner.load(str(checkpoint))
        return int(extra["step"]), int(extra["cursor"])

    def heartbeats(self, state: JobState) -> None:
        """Workers report through their replies; a changed pid means Ray restarted the actor."""
        now = time.time()
        for info in self.rollout.infos():
            self._beat(state, info["worker_id"], "rollout", info, now)
        for i, info in enumerate(self.sandbox.info()):
            self._beat(state, f"sandbox-{i}", "sandbox", info, now)
        for info in self.learner.workers_info:
            self._beat(state, f"learner-{info['rank']}", "learner", info, now)

    def _beat(self, state: JobState, worker_id: str, role: str, info: dict, now: float) -> None:
        pid = info.get("pid")
        if worker_id in self._pids and self._pids[worker_id] != pid:
            self.restarts[worker_id] = self.restarts.get(worker_id, 0) + 1
            state.event(f"{worker_id} was restarted (pid {self._pids[worker_id]} → {pid})", level="warning")
        self._pids[worker_id] = pid
        state.heartbeat(worker_id, role=role, node=info.get("node", ""), device=info.get("device", "cpu"),
                        pid=pid, weight_version=info.get("weight_version"), last_heartbeat=now,
                        restarts=self.restarts.get(worker_id, info.get("restarts", 0)), state="alive")

    def shutdown(self) -> None:
        for part in (self.rollout, self.sandbox, self.learner):
            try:
                part.shutdown()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


def apply_command(command: dict, parts: Parts, state: JobState) -> bool:
    """Apply a control command from Redis; True when the job must stop."""
    kind = command.get("cmd")
    if kind == "stop":
        state.event("stop requested")
        return True
    if kind == "scale":
        n = command.get("rollout_actors")
        if not isinstance(n, int) or not 1 <= n <= 1024:
            state.event(f"ignored scale command with rollout_actors={n!r} (need 1..1024)", level="warning")
            return False
        before = len(parts.rollout.actors)
        parts.rollout.resize(n)
        state.event(f"rollout pool scaled {before} → {n} actors")
        return False
    state.event(f"ignored unknown command {command!r}", level="warning")
    return False


def start(cfg: JobConfig, job_id: str, state: JobState) -> Parts:
    """Create every part on the connected Ray cluster; rollout and sandbox sizes are independent."""
    if not ray.is_initialized():
        if _cluster_running():
            ray.init(address="auto", log_to_driver=False)
        else:  # a local cluster: logical CPUs for every actor the job asks for
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(_needs(cfg)["CPU"])),
                     include_dashboard=False, log_to_driver=False)
    _check_capacity(cfg)
    r = cfg.rollout
    rollout = RolloutPool(cfg.model.path, r.actors, num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                          resources=r.resources, threads=r.threads)
    s = cfg.sandbox
    sandbox = SandboxPool(s.workers, s.backend, sandbox_limits(cfg), reward_config=reward_config(cfg),
                          num_cpus_per_worker=s.num_cpus)
    learner = make_learner(cfg)
    state.event(f"started {r.actors} rollout actors, {s.workers} sandbox workers ({sandbox.backend_name}), "
                f"{cfg.learner.workers} learner workers (ZeRO-{cfg.learner.zero_stage})")
    if sandbox.backend_note:
        state.event(f"sandbox backend: {sandbox.backend_name} ({sandbox.backend_note})")
    return Parts(cfg, rollout, sandbox, learner, load_tokenizer(cfg.model.path))


def _cluster_running() -> bool:
    return bool(os.environ.get("RAY_ADDRESS"))


def _needs(cfg: JobConfig) -> dict[str, float]:
    """Ray resources the job's actors reserve, all together."""
    r, s, lr = cfg.rollout, cfg.sandbox, cfg.learner
    needs = {"CPU": r.actors * r.num_cpus + s.workers * s.num_cpus + lr.workers * lr.num_cpus,
             "GPU": r.actors * r.num_gpus + lr.workers * lr.num_gpus}
    for count, extra in ((r.actors, r.resources), (lr.workers, lr.resources)):
        for name, amount in extra.items():
            needs[name] = needs.get(name, 0) + count * amount
    return {k: v for k, v in needs.items() if v}


def _check_capacity(cfg: JobConfig) -> None:
    """Refuse at once, naming the resource, a job the cluster cannot hold (instead of
    actors waiting forever to be scheduled)."""
    have = ray.cluster_resources()
    for name, amount in _needs(cfg).items():
        if have.get(name, 0) + 1e-9 < amount:
            raise ConfigError(
                f"the job needs {amount:g} {name} in all (rollout.actors, sandbox.workers, learner.workers and "
                f"their num_cpus/num_gpus/resources) but the Ray cluster has {have.get(name, 0):g}; "
                "shrink the job or add nodes")
