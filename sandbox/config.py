"""The sandbox pool's config: workers, backend, and the two objects the sandbox already
uses — per-program :class:`~sandbox.limits.Limits` and the :class:`~sandbox.rewards.RewardConfig`.

``sandbox:`` in a job YAML is :class:`SandboxConfig`, 1:1 (``sandbox.limits.wall_s``,
``sandbox.rewards.code_weight``, ...): the job config composes the very dataclasses the
executors and the reward function receive, so nothing is renamed on the way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.limits import Limits
from sandbox.rewards import RewardConfig


class SandboxConfig(BaseModel):
    """Sandbox workers (Ray actors, each with warm executors), sized independently of rollout."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(2, ge=1, le=1024, description="sandbox worker actors")
    backend: Literal["auto", "jail", "docker"] = Field(
        "auto", description="auto: Docker when an engine answers, else the bubblewrap namespace jail")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per sandbox worker")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per worker "
                                        "(e.g. {sandbox: 1}: only on nodes that advertise them)")
    limits: Limits = Field(default_factory=Limits, description="per-program limits: wall_s, cpu_s, memory_mb, "
                                                               "max_procs, output_bytes, disk_mb")
    rewards: RewardConfig = Field(default_factory=RewardConfig, description="reward = code_weight * (fraction of "
                                  "tests passed, or all-pass with all_pass) + format_weight * (code parses)")
