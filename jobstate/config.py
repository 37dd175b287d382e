"""Where a job's live state goes: the job's ``redis:`` section, 1:1."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RedisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="Redis URL (default: $CGRPO_REDIS_URL or redis://127.0.0.1:6390/0)")
