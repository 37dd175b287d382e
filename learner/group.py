"""The learner worker group: N Ray actors, each a thin wrapper around one :class:`LearnerWorker`.

The group reserves one placement-group bundle per rank (``PACK`` keeps them on as few nodes
as possible, ``SPREAD`` puts them on different nodes), asks rank 0 for its node address and
a free port, and has every actor set ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` before DeepSpeed initialises torch.distributed (as OpenRLHF does, instead of
torchrun). ``train_step`` splits the global batch into equal contiguous shards; every other
method is a collective call on all ranks whose answer comes from rank 0.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from learner.batch import RolloutBatch
from learner.errors import LearnerError
from learner.config import GRPOConfig, LearnerConfig
from learner.weights import ZeroCopyState

class LearnerActor:
    """Ray actor body: sets the rendezvous environment, then delegates to a LearnerWorker."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.worker = None

    def address(self) -> tuple[str, int]:
        from learner.worker import free_port

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, model_path: str, grpo: GRPOConfig, learner: LearnerConfig, total_steps: int, seed: int,
              keep_versions: int, master_addr: str, master_port: int) -> dict:
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")  # Ray shows each actor only its GPUs
        from learner.worker import LearnerWorker

        self.worker = LearnerWorker(model_path, grpo, learner, total_steps=total_steps, seed=seed,
                                    keep_versions=keep_versions, rank=self.rank, world_size=self.world_size)
        return {"rank": self.rank, "pid": os.getpid(), "node": socket.gethostname(),
                "device": str(self.worker.device)}

    def train_step(self, batch: RolloutBatch) -> dict:
        return self.worker.train_step(batch)

    def publish_weights(self, version: int) -> dict | None:
        state = self.worker.publish_weights(version)
        return ZeroCopyState(state) if self.rank == 0 else None

    def save(self, path: str, extra: dict | None) -> str:
        return str(self.worker.save(path, extra))

    def load(self, path: str) -> dict:
        return self.worker.load(path)

    def export_hf(self, path: str) -> str:
        return str(self.worker.export_hf(path))

    def counters(self) -> dict:
        w = self.worker
        return {"step": w.step, "optimizer_steps": w.optimizer_steps, "weight_version": w.weight_version}

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()


class LearnerGroup:
    """``learner.workers`` data-parallel DeepSpeed ranks behind one object.

    ``model_path`` is an HF folder ``dllm.load_model`` reads (every node must see it). The
    configs go to every rank as they are; ``total_steps`` (rollout batches the cosine spans),
    ``seed`` and ``keep_versions`` (published weight versions kept for stale batches' old
    log-probs) come from the job's run section.
    """

    def __init__(self, model_path: str | Path, grpo: GRPOConfig | None = None, learner: LearnerConfig | None = None,
                 *, total_steps: int = 1000, seed: int = 0, keep_versions: int = 0, ready_timeout_s: float = 600.0):
        self.config = grpo or GRPOConfig()
        self.learner_config = lc = learner or LearnerConfig()
        if not (Path(model_path) / "config.json").is_file():
            raise LearnerError(f"learner model folder {str(model_path)!r} has no config.json")
        self.model_path = str(Path(model_path).resolve())
        self.num_workers = lc.workers
        if not ray.is_initialized():
            ray.init()
        bundle = {"CPU": lc.num_cpus, **lc.resources}
        if lc.num_gpus:
            bundle["GPU"] = lc.num_gpus
        self._pg = placement_group([dict(bundle) for _ in range(lc.workers)], strategy=lc.placement)
        ready, _ = ray.wait([self._pg.ready()], timeout=ready_timeout_s)
        if not ready:
            remove_placement_group(self._pg)
            raise LearnerError(f"learner: the Ray cluster cannot place {lc.workers} x {bundle} "
                               f"({lc.placement}) within {ready_timeout_s:.0f}s; lower learner.workers or "
                               "add resources")
        env = {"DS_ACCELERATOR": "cuda" if lc.num_gpus else "cpu", "TOKENIZERS_PARALLELISM": "false"}
        actor_cls = ray.remote(LearnerActor)
        self._actors = [
            actor_cls.options(num_cpus=lc.num_cpus, num_gpus=lc.num_gpus, resources=dict(lc.resources),
                              runtime_env={"env_vars": env}, max_concurrency=1,
                              scheduling_strategy=PlacementGroupSchedulingStrategy(
                                  placement_group=self._pg, placement_group_bundle_index=rank))
            .remote(rank, lc.workers)
            for rank in range(lc.workers)
        ]
        try:
            addr, port = ray.get(self._actors[0].address.remote())
            self.workers_info = ray.get([a.setup.remote(self.model_path, self.config, lc, total_steps, seed,
                                                        keep_versions, addr, port) for a in self._actors])
        except Exception:
            self.shutdown()
            raise

    def _all(self, method: str, *args) -> list:
        return ray.get([getattr(a, method).remote(*args) for a in self._actors])

    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """One coupled-GRPO update on the global batch, split across the ranks; the metrics
        are global (averaged over ranks; ``step_time_s`` is the slowest rank's)."""
        shards = batch.shard(self.num_workers, multiple=self.learner_config.gradient_accumulation_steps)
        results = ray.get([a.train_step.remote(s) for a, s in zip(self._actors, shards)])
        metrics = {k: sum(r[k] for r in results) / len(results) for k in results[0]}
        metrics["step_time_s"] = max(r["step_time_s"] for r in results)
        metrics["step"] = int(results[0]["step"])
        metrics["optimizer_steps"] = int(results[0]["optimizer_steps"])
        return metrics

    def publish_weights(self, version: int) -> ray.ObjectRef:
        """A Ray ObjectRef to the full policy state dict (checkpoint names, CPU tensors), put in
        the object store once by rank 0 and owned by the caller, for the rollout pool to read."""
        refs = [a.publish_weights.remote(version) for a in self._actors]
        ray.get(refs[1:])  # the others only take part in the ZeRO-3 gather
        ray.wait(refs[:1], num_returns=1)
        return refs[0]

    def get_weights(self, version: int) -> dict:
        return ray.get(self.publish_weights(version))

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Checkpoint every rank (path must be on storage all learner nodes share)."""
        self._all("save", str(Path(path).resolve()), extra)
        return Path(path)

    def load(self, path: str | Path) -> dict:
        """Restore a checkpoint written by :meth:`save`; returns its ``extra`` dict."""
        return self._all("load", str(Path(path).resolve()))[0]

    def export_hf(self, path: str | Path) -> Path:
        self._all("export_hf", str(Path(path).resolve()))
        return Path(path)

    def counters(self) -> dict:
        return ray.get(self._actors[0].counters.remote())

    def node_ids(self) -> list[str]:
        """The Ray nodes holding the group's bundles."""
        from ray.util.placement_group import placement_group_table

        if getattr(self, "_pg", None) is None:
            return []
        return sorted(set(placement_group_table(self._pg)["bundles_to_node_id"].values()))

    def shutdown(self) -> None:
        """Tear down the process group and the actors, and release the placement group."""
        actors, self._actors = getattr(self, "_actors", []), []
        if actors:
            try:
                ray.get([a.shutdown.remote() for a in actors], timeout=60)
            except Exception as exc:  # noqa: BLE001 - the actors are killed next anyway
                logging.getLogger(__name__).warning("learner shutdown: %s", exc)
            for a in actors:
                ray.kill(a)
        if getattr(self, "_pg", None) is not None:
            remove_placement_group(self._pg)
            self._pg = None
