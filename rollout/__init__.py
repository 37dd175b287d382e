"""Rollout role: model replicas that generate diffusion completions with their decoding order."""

from rollout.worker import RolloutWorker

__all__ = ["RolloutWorker"]
