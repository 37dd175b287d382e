"""The job config: one validated object composed of the components' own configs.

A job YAML maps 1:1 onto :class:`JobConfig`; each section *is* the config class of the part
that uses it (``rollout:`` is :class:`rollout.config.RolloutConfig`, ``learner:`` is
:class:`learner.config.LearnerConfig`, ...), so a field has one name and one validation
from the YAML to its use. Only ``model:`` and ``run:`` (the recipe's own loop settings) live
here. Every mistake is one :class:`errors.ConfigError` naming the field
(``job.yaml: rollout.actors: Input should be greater than or equal to 1``) before any Ray
resource is taken.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from errors import ConfigError, validated
from jobstate.config import RedisConfig, WandbConfig
from learner.config import GRPOConfig, LearnerConfig
from rollout.config import RolloutConfig
from sandbox.config import SandboxConfig
from tasks.config import TasksConfig

__all__ = ["REPO", "ConfigError", "JobConfig", "ModelConfig", "RunConfig", "config_reference", "demo_config",
           "load_config", "parse_config", "with_overrides"]

REPO = Path(__file__).resolve().parent.parent


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field("models/tiny-dllm", description="HF folder (Dream or LLaDA layout) the job starts from; "
                                                      "relative paths are relative to the repository")

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str) -> str:
        path = Path(v) if Path(v).is_absolute() else REPO / v
        if not (path / "config.json").is_file():
            raise ValueError(f"no model folder with config.json at {v!r}")
        return str(path)


class RunConfig(BaseModel):
    """The recipe's loop: how many steps, how prompts are batched, sync or bounded-async,
    and when it evaluates, checkpoints and pushes weights."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(100, ge=1, description="RL steps (one rollout batch each)")
    prompts_per_step: int = Field(8, ge=1, description="prompts per RL step (each sampled grpo.num_generations "
                                                       "times)")
    drop_equal_groups: bool = Field(False, description="drop prompt groups whose rewards are all equal (zero "
                                    "advantage: no policy signal, they only dilute the token-normalised loss) and "
                                    "keep up to prompts_per_step groups that have signal, from the oversampled draw")
    oversample: float = Field(1.0, ge=1.0, description="with drop_equal_groups: roll out this many times "
                              "prompts_per_step prompts per step, so dropped groups are replaced (refill)")
    inpaint: bool = Field(False, description="IGPO-style inpainting: when no completion of a training prompt "
                          "passes, decode inpaint_share x G more with parts of its canonical solution given as "
                          "hints, and put the ones that pass in place of failed ones (the group gets signal)")
    inpaint_hint_ratio: float = Field(0.5, gt=0, le=1, description="with inpaint: the share of the canonical "
                                      "solution's tokens given to each hinted completion (drawn per completion)")
    inpaint_share: float = Field(0.5, gt=0, le=1, description="with inpaint: hinted completions decoded per "
                                 "failed group, as a share of grpo.num_generations (at most that many replace "
                                 "failed ones)")
    mode: Literal["sync", "async"] = Field("sync", description="async: roll out the next batches while the "
                                                               "learner trains on this one")
    max_staleness: int = Field(1, ge=1, description="async: how many weight versions a batch may lag")
    weight_sync_every: int = Field(1, ge=1, description="push weights to the rollout pool every k updates")
    eval_every: int = Field(0, ge=0, description="evaluate every n steps (0 = never; also at start and end "
                                                 "when > 0)")
    eval_tasks: int = Field(32, ge=1, description="held-out tasks per evaluation")
    eval_samples: int = Field(1, ge=1, description="completions per held-out task in an evaluation (pass@1 is "
                                                   "their mean; its standard error is logged beside it)")
    eval_temperature: float = Field(0.2, ge=0, description="sampling temperature of the evaluations")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every n steps (0 = only at the end)")
    output_dir: str = Field("runs", description="checkpoints, logs and exports go to OUTPUT_DIR/JOB_ID "
                                                "(relative paths are relative to the repository)")
    seed: int = Field(0, ge=0, description="seed of prompt order, rollouts, masks and the learner's RNGs")
    max_learner_restarts: int = Field(2, ge=0, description="learner failures recovered from the last checkpoint")

    def prompts_drawn(self) -> int:
        """Prompts rolled out per step: ``prompts_per_step``, times ``oversample`` when equal-reward
        groups are dropped and refilled."""
        return math.ceil(self.prompts_per_step * self.oversample) if self.drop_equal_groups else self.prompts_per_step

    def versions_in_flight(self) -> int:
        """How many published weight versions a batch can still come from while the learner has
        moved on: the learner keeps that many snapshots for their old log-probs (0 in sync mode
        with a push after every update, where the live policy is always the behaviour policy)."""
        lag = self.max_staleness if self.mode == "async" else 0
        return lag + 1 if lag or self.weight_sync_every > 1 else 0


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("cgrpo-job", min_length=1, max_length=80, description="job name (prefix of the job id)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)

    @model_validator(mode="after")
    def _name_is_a_job_id_prefix(self) -> JobConfig:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$", self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, spaces, '_', '.', '-'")
        return self

    def run_dir(self, job_id: str) -> Path:
        """Where this job's checkpoints, metrics record, driver log and exported model live."""
        out = Path(self.run.output_dir)
        return (out if out.is_absolute() else REPO / out).resolve() / job_id


def parse_config(data: object, source: str = "job config") -> JobConfig:
    return validated(JobConfig, data, source=source)


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a job YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"job file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(data, str(path))


def demo_config() -> JobConfig:
    """The embedded demo: sized for a 2-core machine, a few minutes of coupled-GRPO."""
    return parse_config(yaml.safe_load((REPO / "orchestrator" / "demo.yaml").read_text()), "orchestrator/demo.yaml")


# The demo's recipe on the schedule that fits 20 minutes on 2 cores instead of 10: more steps at
# a higher rate, chosen on the validation split (docs/learning.md). `bench/learning.py` and
# `cgrpo experiment` train with it.
LONG_SCHEDULE = ("learner.lr=1e-3", "run.steps=200")


def long_schedule_config() -> JobConfig:
    """The demo job with ``LONG_SCHEDULE`` applied."""
    return with_overrides(demo_config(), list(LONG_SCHEDULE))


def with_overrides(base: JobConfig, settings: list[str]) -> JobConfig:
    """``base`` with ``section.field=value`` overrides (``section.sub.field`` for nested blocks;
    values read as YAML), validated like a job file, so that a typo is one clear error."""
    data = base.model_dump(mode="json")
    for item in settings:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) < 2 or not all(path):
            raise ConfigError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. learner.lr=1e-4")
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {item!r}: no config section {'.'.join(path[:-1])!r} (see docs/config.md)")
            node = node[part]
        node[path[-1]] = yaml.safe_load(raw)
    return parse_config(data, "--set")


# --------------------------------------------------------------------------- docs/config.md

def _dataclass_descriptions(cls: type) -> dict[str, str]:
    """Field descriptions of a config dataclass, from its docstring's ``name  text`` lines."""
    out: dict[str, str] = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        m = re.match(r"^\s{4}(\w+)\s{2,}(.*)$", line)
        if m and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.startswith(" " * 8) and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def _rows(prefix: str, model: type, default: object) -> tuple[list[str], list[tuple[str, type, object]]]:
    """Table rows of one section, and its nested sections to document after it."""
    rows, nested = [], []
    if dataclasses.is_dataclass(model):
        notes = _dataclass_descriptions(model)
        for f in dataclasses.fields(model):
            rows.append(f"| `{prefix}.{f.name}` | `{getattr(default, f.name)!r}` | {notes.get(f.name, '')} |")
        return rows, nested
    for name, field in model.model_fields.items():
        value = getattr(default, name)
        kind = field.annotation
        if isinstance(kind, type) and (issubclass(kind, BaseModel) or dataclasses.is_dataclass(kind)):
            nested.append((f"{prefix}.{name}", kind, value))
            rows.append(f"| `{prefix}.{name}` | (block) | {field.description or ''}; see below |")
        else:
            shown = list(value) if isinstance(value, tuple) else value
            rows.append(f"| `{prefix}.{name}` | `{shown!r}` | {field.description or ''} |")
    return rows, nested


def config_reference() -> str:
    """docs/config.md, generated from the schema so that the two cannot drift apart."""
    lines = ["# Job config reference", "",
             "A job is one YAML file. Each top-level section *is* the config class of the part that uses",
             "it (the class is named under each heading), so a field has one name and one validation from",
             "the YAML to its use. Unknown fields are errors (a typo never silently falls back to a",
             "default). Defaults follow the public ml-diffucoder recipe where one exists (docs/design.md);",
             "`orchestrator/demo.yaml` shows a 2-core sizing and `deploy/examples/` multi-GPU ones.",
             "Regenerate with `python -c 'from orchestrator.config import config_reference as c; print(c())' "
             "> docs/config.md`.", ""]
    default = JobConfig()
    pending: list[tuple[str, type, object]] = []
    for name, field in JobConfig.model_fields.items():
        kind, value = field.annotation, getattr(default, name)
        if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
            lines += [f"## `{name}`", "", f"default `{value!r}`: {field.description}", ""]
            continue
        pending.append((name, kind, value))
    while pending:
        prefix, kind, value = pending.pop(0)
        rows, nested = _rows(prefix, kind, value)
        lines += [f"## `{prefix}` ({kind.__module__}.{kind.__name__})", "", "| field | default | meaning |",
                  "|---|---|---|", *rows, ""]
        pending[0:0] = nested
    return "\n".join(lines)
