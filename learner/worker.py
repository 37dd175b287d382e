"""One data-parallel rank of the learner: a real DeepSpeed engine running coupled-GRPO updates.

``LearnerWorker`` is a plain training object (no Ray): :mod:`learner.group` wraps one per
Ray actor and sets ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
before constructing it, as OpenRLHF does; alone (world size 1) it sets them itself.

* Engine: ZeRO stage 0-3 from the config, AdamW via ``{"type": "AdamW", "params":
  {"torch_adam": true}}`` (no compiled ops), bf16 on GPU / fp32 on CPU, NCCL on GPU / gloo
  on CPU (``DS_ACCELERATOR=cpu``), gradient clipping, gradient accumulation, and a
  warm-up + cosine-to-``min_lr_ratio`` schedule (a ``LambdaLR`` DeepSpeed steps and saves).
* ``train_step``: old log-probs once per batch (no grad), then ``num_iterations`` optimiser
  steps, each with one mask seed shared by policy, old policy and reference. The old
  log-probs come from the weights that *generated* each row (``RolloutBatch.versions``): the
  live policy when it has not moved since it published that version, else a snapshot kept at
  ``publish_weights`` (the last ``keep_versions`` versions). So in bounded-async mode, or with
  weights pushed every few updates, the ratio measures how far the policy moved from the
  behaviour policy, as PPO's ratio must, instead of being 1 by construction.
* A frozen reference model when ``beta > 0``, copied from the policy every
  ``ref_sync_every`` optimiser steps (partitioned like the policy under ZeRO-3).
* ``publish_weights`` / ``export_hf`` consolidate full tensors (``GatheredParameters`` under
  ZeRO-3); ``save`` / ``load`` restore model, optimiser, scheduler, reference, RNG states,
  counters and the caller's ``extra`` (data cursor) exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import torch

import dllm
from learner.batch import RolloutBatch
from learner.errors import LearnerError
from dllm.schedule import decay_param_groups, warmup_cosine
from learner.config import GRPOConfig, LearnerConfig
from learner.grpo import batch_logps, grpo_token_loss

STATE_FILE = "learner_state.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def free_port() -> int:
    """A TCP port nobody listens on right now (for the torch.distributed rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _import_deepspeed(on_gpu: bool):
    """Import DeepSpeed for this process's device. On CPU it must see ``DS_ACCELERATOR=cpu``
    before import, and must not probe/JIT-build its C++ ops (a 2-minute compile on a fresh
    machine that gloo does not need)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    import deepspeed
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)
    if not on_gpu and "__compatible_ops__" not in vars(deepspeed.ops):
        vars(deepspeed.ops)["__compatible_ops__"] = {}
    return deepspeed


def deepspeed_config(config: LearnerConfig, world_size: int, bf16: bool, with_optimizer: bool = True) -> dict:
    """The DeepSpeed config dict of the policy (or, without optimiser, the reference) engine."""
    cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.gradient_accumulation_steps * world_size,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if bf16:
        cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    if with_optimizer:
        cfg["gradient_clipping"] = config.max_grad_norm
        cfg["optimizer"] = {"type": "AdamW", "params": {
            "torch_adam": True, "lr": config.lr, "betas": list(config.adam_betas), "eps": config.adam_eps,
            "weight_decay": config.weight_decay}}
    return cfg


class LearnerWorker:
    """One rank: policy engine, optional reference model, and the coupled-GRPO step."""

    def __init__(self, model_path: str | Path, grpo: GRPOConfig | None = None, learner: LearnerConfig | None = None,
                 *, total_steps: int = 1000, seed: int = 0, keep_versions: int = 0, rank: int | None = None,
                 world_size: int | None = None):
        self.config = grpo or GRPOConfig()
        self.learner_config = learner or LearnerConfig()
        self.total_steps, self.seed, self.keep_versions = int(total_steps), int(seed), int(keep_versions)
        if self.total_steps < 1:
            raise LearnerError(f"LearnerWorker: total_steps must be >= 1 (got {total_steps})")
        self.model_path = Path(model_path)
        self.rank = int(os.environ.get("RANK", "0") if rank is None else rank)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1") if world_size is None else world_size)
        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size))
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            if self.world_size > 1:
                raise LearnerError("LearnerWorker: set MASTER_ADDR/MASTER_PORT for a multi-rank group "
                                   "(learner.group.LearnerGroup does this)")
            os.environ["MASTER_PORT"] = str(free_port())

        self.on_gpu = torch.cuda.is_available()
        ds = _import_deepspeed(self.on_gpu)
        self._ds = ds
        if self.on_gpu:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        if not torch.distributed.is_initialized():
            ds.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo")
        lc = self.learner_config
        self.bf16 = lc.dtype == "bf16" or (lc.dtype == "auto" and self.on_gpu)
        if self.bf16 and not self.on_gpu:
            raise LearnerError("learner.dtype: bf16 training needs a GPU; use 'auto' or 'fp32' on CPU")

        self._seed_everything(self.seed)
        model = dllm.load_model(self.model_path)  # fp32; DeepSpeed casts to bf16 and keeps fp32 masters
        # The cosine spans every optimiser step of the job: num_iterations per rollout batch.
        optimiser_steps = self.total_steps * self.config.num_iterations
        schedule = lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, s / optimiser_steps, warmup_steps=lc.warmup_steps,
                                         min_lr_ratio=lc.min_lr_ratio))
        self.engine, self.optimizer, _, self.scheduler = ds.initialize(
            model=model, model_parameters=decay_param_groups(model, lc.weight_decay),
            config=deepspeed_config(lc, self.world_size, self.bf16), lr_scheduler=schedule)
        self.ref = self._make_reference() if self.config.beta > 0 else None
        self.step = 0             # train_step calls (rollout batches)
        self.optimizer_steps = 0  # optimiser updates (num_iterations per train_step)
        self.weight_version = 0
        self.live_version: int | None = None         # the version the policy's weights equal, if any
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}  # published versions, on CPU
        self._behaviour = None                       # a model that holds a snapshot for old log-probs

    # --- helpers ------------------------------------------------------------------------
    @property
    def zero3(self) -> bool:
        return self.learner_config.zero_stage == 3

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _gathered(self, module: torch.nn.Module, modifier_rank: int | None = None):
        """Full parameters inside the block (a no-op unless ZeRO-3 partitions them)."""
        if not self.zero3:
            return contextlib.nullcontext()
        return self._ds.zero.GatheredParameters(list(module.parameters()), modifier_rank=modifier_rank)

    def _barrier(self) -> None:
        torch.distributed.barrier()

    def _make_reference(self):
        """A frozen copy of the start model: a plain replica under ZeRO 0-2, a parameter-
        partitioned inference engine under ZeRO-3 (so it costs 1/world of the memory)."""
        ref = dllm.load_model(self.model_path)
        ref.requires_grad_(False)
        if self.zero3:
            engine, *_ = self._ds.initialize(model=ref, config=deepspeed_config(
                self.learner_config, self.world_size, self.bf16, with_optimizer=False))
            engine.eval()
            self._ref_engine = engine  # keeps ZeRO-3's partitioning hooks alive
            return engine.module
        return ref.to(self.device, torch.bfloat16 if self.bf16 else torch.float32).eval()

    def _sync_reference(self) -> None:
        """Copy the policy's current weights into the reference model."""
        policy = self.engine.module
        if not self.zero3:
            self.ref.load_state_dict(policy.state_dict())
            return
        for p, r in zip(policy.parameters(), self.ref.parameters(), strict=True):
            with self._ds.zero.GatheredParameters([p, r], modifier_rank=0):
                if self.rank == 0:
                    r.data.copy_(p.data)

    def _mask_seeds(self) -> list[int]:
        """One mask seed per inner iteration: fresh ones derived from (seed, step) when
        random_masking (identical on every rank, reproducible after resume), else fixed."""
        cfg = self.config
        if not cfg.random_masking:
            return [cfg.mask_seed] * cfg.num_iterations
        rng = random.Random(self.seed * 1_000_003 + self.step)
        return [rng.randrange(2**31 - 1) for _ in range(cfg.num_iterations)]

    def _all_reduce(self, values: list[float], op) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.on_gpu else "cpu")
        if self.world_size > 1:
            torch.distributed.all_reduce(t, op=op)
        return t.tolist()

    def _stale_rows(self, batch: RolloutBatch) -> torch.Tensor:
        """[b] bool: rows generated by weights other than the policy's current ones."""
        if batch.versions is None:
            return torch.zeros(batch.size, dtype=torch.bool, device=self.device)
        if self.live_version is None:
            return torch.ones(batch.size, dtype=torch.bool, device=self.device)
        return batch.versions.to(self.device) != self.live_version

    def _behaviour_logps(self, batch: RolloutBatch, stale: torch.Tensor, seed: int) -> torch.Tensor:
        """Old log-probs of the stale rows, each from the snapshot of the version that generated
        it (other rows: zeros, replaced by the caller)."""
        out = torch.zeros(batch.size, batch.completion_len, device=self.device)
        for version in sorted({int(v) for v in batch.versions[stale].tolist()}):
            if version not in self.snapshots:
                raise LearnerError(
                    f"train_step: rows were generated by weight version {version}, which this learner no longer "
                    f"keeps (kept: {sorted(self.snapshots) or 'none'}); raise keep_versions to the staleness the "
                    "recipe allows")
            if self._behaviour is None:
                self._behaviour = dllm.load_model(self.model_path).to(self.device).eval()
                self._behaviour.requires_grad_(False)
            dtype = next(self._behaviour.parameters()).dtype
            self._behaviour.load_checkpoint_state_dict(
                {k: v.to(self.device, dtype) for k, v in self.snapshots[version].items()}, source=f"weights v{version}")
            rows = (batch.versions.to(self.device) == version) & stale
            out = torch.where(rows.view(-1, 1), batch_logps(self._behaviour, batch, self.config, seed), out)
        return out

    # --- the coupled-GRPO step ----------------------------------------------------------
    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """``num_iterations`` optimiser steps on this rank's shard of one rollout batch.

        Every rank must call this with its shard (same row count, from
        ``RolloutBatch.shard``); a whole batch given to a single worker is padded here.
        Returns metrics of the *global* batch (identical on every rank).
        """
        t0 = time.perf_counter()
        cfg = self.config
        gas = self.learner_config.gradient_accumulation_steps
        if batch.global_size is None:
            batch = batch.pad_rows(gas)
        elif batch.size % gas:
            raise LearnerError(f"train_step: shard of {batch.size} rows does not split into "
                               f"{gas} micro-batches (use RolloutBatch.shard(world, multiple={gas}))")
        batch = batch.to(self.device)
        per = batch.size // gas
        micro = [batch.rows(i * per, (i + 1) * per) for i in range(gas)]
        tokens, sequences = self._all_reduce(
            [float(batch.completion_mask.sum()), float((batch.completion_mask.sum(1) > 0).sum())],
            torch.distributed.ReduceOp.SUM)
        denominator = max(1.0, tokens if cfg.loss_normalisation == "tokens" else sequences)
        seeds = self._mask_seeds()

        policy = self.engine.module
        with torch.no_grad():
            # Old log-probs, computed once before any update. Rows the current weights generated
            # read them from the policy (iteration 0 reuses the live forward, detached: the policy
            # has not moved yet); older rows from the snapshot of the version that generated them.
            stale = [self._stale_rows(mb) for mb in micro]
            old = {(i, j): batch_logps(policy, mb, cfg, seeds[i])
                   for i in range(1, cfg.num_iterations) for j, mb in enumerate(micro)}
            old_stale = {(i, j): self._behaviour_logps(mb, stale[j], seeds[i])
                         for i in range(cfg.num_iterations) for j, mb in enumerate(micro) if stale[j].any()}
            ref = {(i, j): batch_logps(self.ref, mb, cfg, seeds[i])
                   for i in range(cfg.num_iterations) for j, mb in enumerate(micro)} if self.ref is not None else {}

        sums = {"loss": 0.0, "kl": 0.0, "clip": 0.0, "ratio": 0.0}
        ratio_min, ratio_max, grad_norms, lr = float("inf"), float("-inf"), [], 0.0
        self.engine.train()
        for i in range(cfg.num_iterations):
            lr = float(self.optimizer.param_groups[0]["lr"])
            for j, mb in enumerate(micro):
                new = batch_logps(self.engine, mb, cfg, seeds[i])
                old_ij = new.detach() if i == 0 else old[(i, j)]
                if (i, j) in old_stale:
                    old_ij = torch.where(stale[j].view(-1, 1), old_stale[(i, j)], old_ij)
                loss, m = grpo_token_loss(new, old_ij, ref.get((i, j)), mb.advantages, mb.completion_mask,
                                          epsilon=cfg.epsilon, beta=cfg.beta, normalisation=cfg.loss_normalisation,
                                          denominator=denominator, kl_clamp=cfg.kl_clamp)
                # DeepSpeed averages gradients over ranks; the loss is already normalised by the
                # global count, so scale by world size and do not let it divide by gas again.
                self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
                self.engine.step()
                sums["loss"] += m["loss"]
                sums["kl"] += m["kl"] * m["tokens"]
                sums["clip"] += m["clip_frac"] * m["tokens"]
                sums["ratio"] += m["ratio_mean"] * m["tokens"]
                if m["tokens"] > 0:
                    ratio_min, ratio_max = min(ratio_min, m["ratio_min"]), max(ratio_max, m["ratio_max"])
            norm = self.engine.get_global_grad_norm()
            grad_norms.append(float(norm) if norm is not None else float("nan"))
            self.optimizer_steps += 1
            self.live_version = None  # the weights moved away from every published version
            if self.ref is not None and cfg.ref_sync_every and self.optimizer_steps % cfg.ref_sync_every == 0:
                self._sync_reference()
        self.step += 1

        SUM, MIN, MAX = (torch.distributed.ReduceOp.SUM, torch.distributed.ReduceOp.MIN,
                         torch.distributed.ReduceOp.MAX)
        loss_s, kl_s, clip_s, ratio_s = self._all_reduce(
            [sums["loss"], sums["kl"], sums["clip"], sums["ratio"]], SUM)
        (rmin,) = self._all_reduce([ratio_min], MIN)
        (rmax,) = self._all_reduce([ratio_max], MAX)
        per_token = max(1.0, tokens) * cfg.num_iterations
        return {
            "loss": loss_s / cfg.num_iterations, "kl": kl_s / per_token, "clip_frac": clip_s / per_token,
            "ratio_mean": ratio_s / per_token if tokens else 1.0,
            "ratio_min": rmin if tokens else 1.0, "ratio_max": rmax if tokens else 1.0,
            "grad_norm": float(np.mean(grad_norms)), "lr": lr, "tokens": tokens, "sequences": sequences,
            "step": self.step, "optimizer_steps": self.optimizer_steps,
            "step_time_s": time.perf_counter() - t0,
        }

    # --- weights out ----------------------------------------------------------------------
    def publish_weights(self, version: int) -> dict[str, torch.Tensor]:
        """The full policy state dict on CPU in the checkpoint's own names, on rank 0 (``{}``
        elsewhere). Every rank must call it: under ZeRO-3 the gather is collective. With
        ``keep_versions`` every rank also keeps it as the snapshot of ``version``, for the old
        log-probs of batches that version generates."""
        state: dict[str, torch.Tensor] = {}
        with self._gathered(self.engine.module):
            if self.rank == 0 or self.keep_versions:
                state = {k: v.detach().to("cpu", copy=True).contiguous()
                         for k, v in self.engine.module.checkpoint_state_dict().items()}
        self.weight_version = self.live_version = int(version)
        if self.keep_versions:
            self.snapshots[int(version)] = state
            for old in sorted(self.snapshots)[:-self.keep_versions]:
                del self.snapshots[old]
        return state if self.rank == 0 else {}

    def export_hf(self, path: str | Path) -> Path:
        """Write an HF folder ``dllm.load_model`` loads (config.json + model.safetensors, and the
        source folder's tokenizer files when it had them). Collective; rank 0 writes."""
        path = Path(path)
        with self._gathered(self.engine.module):
            if self.rank == 0:
                dllm.save_model(self.engine.module, path)
                for name in TOKENIZER_FILES:
                    if (self.model_path / name).is_file():
                        shutil.copy2(self.model_path / name, path / name)
        self._barrier()
        return path

    # --- checkpoints ----------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Checkpoint everything a resumed job needs to make the same next update. Collective.

        Layout: ``deepspeed/`` (DeepSpeed's own checkpoint: module, optimiser partitions,
        scheduler), ``reference/`` (the reference model, when beta > 0), ``rng/rank{r}.pt``,
        and ``learner_state.json`` (counters, config, ``extra``; written last).
        """
        path = Path(path)
        extra = dict(extra or {})
        try:
            json.dumps(extra)
        except TypeError as exc:
            raise LearnerError(f"save: extra must be JSON-serialisable ({exc})") from None
        self.engine.save_checkpoint(str(path / "deepspeed"), tag=f"step{self.step}",
                                    client_state={"learner_step": self.step})
        (path / "rng").mkdir(parents=True, exist_ok=True)
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.on_gpu:
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, path / "rng" / f"rank{self.rank}.pt")
        if self.ref is not None:
            with self._gathered(self.ref):
                if self.rank == 0:
                    dllm.save_model(self.ref, path / "reference")
        self._barrier()
        if self.rank == 0:
            state = {"step": self.step, "optimizer_steps": self.optimizer_steps, "weight_version": self.weight_version,
                     "world_size": self.world_size, "zero_stage": self.learner_config.zero_stage,
                     "model_path": str(self.model_path), "grpo": self.config.model_dump(mode="json"),
                     "learner": self.learner_config.model_dump(mode="json"),
                     "extra": extra}
            tmp = path / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state, indent=2) + "\n")
            tmp.replace(path / STATE_FILE)
        self._barrier()
        return path

    def load(self, path: str | Path) -> dict:
        """Restore a checkpoint written by :meth:`save` (same world size and ZeRO stage);
        returns the ``extra`` dict it was saved with. Collective."""
        path = Path(path)
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise LearnerError(f"{state_file} is missing: {path} is not a complete learner checkpoint")
        state = json.loads(state_file.read_text())
        if state["world_size"] != self.world_size or state["zero_stage"] != self.learner_config.zero_stage:
            raise LearnerError(
                f"{path}: saved with {state['world_size']} learner workers under ZeRO-{state['zero_stage']}; "
                f"resume with the same (now {self.world_size} workers, ZeRO-{self.learner_config.zero_stage})")
        load_path, _ = self.engine.load_checkpoint(str(path / "deepspeed"), load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
        if load_path is None:
            raise LearnerError(f"{path / 'deepspeed'}: DeepSpeed found no checkpoint to load")
        if self.ref is not None:
            if not (path / "reference").is_dir():
                raise LearnerError(f"{path / 'reference'} is missing: the checkpoint was saved with beta = 0")
            saved = dllm.load_model(path / "reference")
            if self.zero3:
                for r, s in zip(self.ref.parameters(), saved.parameters(), strict=True):
                    with self._ds.zero.GatheredParameters([r], modifier_rank=0):
                        if self.rank == 0:
                            r.data.copy_(s.data.to(r.device, r.dtype))
            else:
                self.ref.load_state_dict({k: v.to(self.ref.lm_head.weight.dtype)
                                          for k, v in saved.state_dict().items()})
        rng = torch.load(path / "rng" / f"rank{self.rank}.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.on_gpu and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"])
        self.step, self.optimizer_steps = int(state["step"]), int(state["optimizer_steps"])
        self.weight_version = int(state.get("weight_version", 0))
        self._barrier()
        return dict(state.get("extra", {}))

    def shutdown(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
