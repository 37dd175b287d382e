"""Where a job's state goes: the job's ``redis:`` (the live view) and ``wandb:`` (an optional
copy of the record) sections, 1:1. The run directory's record needs no settings: every job
writes it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RedisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="Redis URL (default: $CGRPO_REDIS_URL or redis://127.0.0.1:6390/0)")


class WandbConfig(BaseModel):
    """Weights & Biases: the step metrics and evaluations also go to a W&B run named after
    the job, kept in the run directory's ``wandb/`` folder."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="log to W&B as well (the run directory's record is always written)")
    mode: Literal["online", "offline"] = Field(
        "online", description="online needs WANDB_API_KEY and network; offline writes the run folder only "
                              "(upload it later with `wandb sync`)")
    project: str = Field("cgrpo", min_length=1, description="W&B project")
    entity: str | None = Field(None, description="W&B team or user (default: the API key's)")
    tags: list[str] = Field(default_factory=list, description="tags of the W&B run")
