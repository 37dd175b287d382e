"""Which tasks a job trains and evaluates on: the job's ``tasks:`` section, 1:1."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TasksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str = Field("builtin", description="task source of the RL prompts: builtin (its train split), codeio, "
                                              "jsonl:PATH")
    heldout: str = Field("builtin", description="task source of the periodic evaluation (builtin: its held-out "
                                                "split; humaneval, mbpp, jsonl:PATH)")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training tasks")
    max_difficulty: int | None = Field(None, ge=1, description="built-in tasks up to this difficulty level (1-4)")
