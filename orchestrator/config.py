"""The job config: one validated object, each part receives only its own section.

A job YAML maps 1:1 onto :class:`JobConfig`. Every mistake is reported as a single
:class:`ConfigError` naming the field (``rollout.actors: must be >= 1``) before any Ray
resource is taken. Defaults follow the ml-diffucoder recipe where one exists (see
DESIGN.md §3); the demo's config overrides the sizes for a 2-core machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dllm.errors import CgrpoError

REPO = Path(__file__).resolve().parent.parent


class ConfigError(CgrpoError):
    """A job config that cannot run; the message names the field and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    path: str = Field("models/tiny-dllm", description="HF folder (Dream or LLaDA layout) to start from")

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str) -> str:
        path = Path(v) if Path(v).is_absolute() else REPO / v
        if not (path / "config.json").is_file():
            raise ValueError(f"no model folder with config.json at {v!r}")
        return str(path)


class TasksSection(_Section):
    train: str = Field("builtin", description="task source for RL prompts (builtin, codeio, jsonl:PATH)")
    heldout: str = Field("builtin", description="task source for periodic evaluation (its held-out split)")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training tasks")
    max_difficulty: int | None = Field(None, ge=1, description="built-in tasks up to this difficulty level")


class RolloutSection(_Section):
    actors: int = Field(2, ge=1, le=1024, description="rollout actors (model replicas)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per rollout actor (0 = CPU)")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per rollout actor")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per actor")
    temperature: float = Field(1.2, ge=0, description="sampling temperature (paper: 1.2 best for RL)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling mass")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely tokens (None: all)")
    alg: Literal["origin", "maskgit_plus", "topk_margin", "entropy"] = Field(
        "entropy", description="position order: origin, maskgit_plus, topk_margin, entropy (DiffuCoder)")
    alg_temp: float = Field(0.0, ge=0, description="> 0: sample the positions to commit (Gumbel) instead of taking the most confident")
    steps: int = Field(256, ge=1, description="denoising steps")
    max_new_tokens: int = Field(256, ge=1, description="completion length N")
    num_generations: int = Field(10, ge=2, description="completions per prompt (G)")
    prompts_per_step: int = Field(8, ge=1, description="prompts sampled per RL step")
    threads: int = Field(1, ge=1, description="torch threads per actor on CPU")

    @model_validator(mode="after")
    def _steps(self):
        if self.steps > self.max_new_tokens:
            raise ValueError(f"steps ({self.steps}) cannot exceed max_new_tokens ({self.max_new_tokens})")
        return self


class SandboxSection(_Section):
    workers: int = Field(2, ge=1, le=1024, description="sandbox worker actors")
    backend: Literal["auto", "jail", "docker"] = Field(
        "auto", description="auto: Docker when an engine answers, else the namespace jail")
    timeout_s: float = Field(5.0, gt=0, le=600, description="wall-clock limit per program")
    memory_mb: int = Field(512, ge=32, description="memory limit per program")
    code_weight: float = Field(2.0, ge=0, description="reward weight of the fraction of tests passed")
    format_weight: float = Field(0.5, ge=0, description="reward weight of a well-formed code block")
    all_pass: bool = Field(False, description="reward all tests passing only (else the fraction passed)")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per sandbox worker")


class LearnerSection(_Section):
    workers: int = Field(1, ge=1, le=1024, description="data-parallel learner workers")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per learner worker")
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per learner worker")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per worker")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="placement-group strategy of the learner bundles")
    lr: float = Field(1e-6, gt=0, description="peak learning rate (cosine to 10%)")
    max_grad_norm: float = Field(0.2, gt=0, description="gradient clipping norm")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (betas 0.9, 0.99)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per worker per optimiser step")


class GRPOSection(_Section):
    estimator: Literal["coupled", "decoupled", "d1"] = Field(
        "coupled", description="log-prob estimator: coupled (the method), decoupled, d1 (baseline)")
    num_pairs: int = Field(1, ge=1, description="λ: complementary mask pairs per estimate")
    t_low: float = Field(0.2, gt=0, lt=1, description="mask ratio t ~ U[t_low, t_high]")
    t_high: float = Field(0.8, gt=0, lt=1)
    p_mask_prompt: float = Field(0.0, ge=0, lt=1, description="probability of masking each prompt token in a pass")
    d1_passes: int = Field(1, ge=1, description="d1 only: fully masked passes averaged (1 in d1; 3 matches "
                           "the coupled estimator's cost)")
    random_masking: bool = Field(True, description="fresh mask seed per inner iteration (else 42)")
    beta: float = Field(0.01, ge=0, description="KL weight (k3 estimator)")
    kl_clamp: float | None = Field(10.0, gt=0, description="upper bound of each token's k3 KL term (null: "
                                   "none); stops one collapsed token's exp(log-ratio) from dominating a step")
    ref_sync_every: int = Field(64, ge=1, description="re-sync the reference model every n steps")
    epsilon: float = Field(0.5, gt=0, lt=1, description="ratio clip to [1-ε, 1+ε]")
    num_iterations: int = Field(2, ge=1, description="μ inner updates per rollout batch")
    scale_rewards: bool = Field(False, description="divide advantages by the group std")
    loss_normalisation: Literal["tokens", "sequence"] = Field(
        "tokens", description="tokens: sum over all completion tokens / count; sequence: mean per completion")

    @model_validator(mode="after")
    def _range(self):
        if self.t_low > self.t_high:
            raise ValueError(f"t_low ({self.t_low}) must be <= t_high ({self.t_high})")
        return self


class RunSection(_Section):
    steps: int = Field(100, ge=1, description="RL steps")
    mode: Literal["sync", "async"] = Field("sync", description="async: roll out step k+1 while training step k")
    max_staleness: int = Field(1, ge=1, description="async: max weight versions a batch may lag")
    weight_sync_every: int = Field(1, ge=1, description="push weights to the rollout pool every k updates")
    eval_every: int = Field(0, ge=0, description="evaluate every n steps (0 = never; always at start and end when > 0)")
    eval_tasks: int = Field(32, ge=1, description="held-out tasks per evaluation")
    eval_temperature: float = Field(0.2, ge=0)
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every n steps (0 = only at the end)")
    output_dir: str = Field("runs", description="checkpoints, logs and exports go to OUTPUT_DIR/JOB_ID "
                            "(relative paths are relative to the repository)")
    seed: int = Field(0, description="seed of prompt order, rollouts and masks")
    max_learner_restarts: int = Field(2, ge=0, description="learner failures recovered from the last checkpoint")


class RedisSection(_Section):
    url: str | None = Field(None, description="Redis URL (default: $CGRPO_REDIS_URL or redis://127.0.0.1:6390/0)")


class JobConfig(_Section):
    name: str = Field("cgrpo-job", min_length=1, max_length=80, description="job name (prefix of the job id)")
    model: ModelSection = Field(default_factory=ModelSection)
    tasks: TasksSection = Field(default_factory=TasksSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    learner: LearnerSection = Field(default_factory=LearnerSection)
    grpo: GRPOSection = Field(default_factory=GRPOSection)
    run: RunSection = Field(default_factory=RunSection)
    redis: RedisSection = Field(default_factory=RedisSection)

    def run_dir(self, job_id: str) -> Path:
        """Where this job's checkpoints, driver log and exported model live."""
        out = Path(self.run.output_dir)
        return (out if out.is_absolute() else REPO / out).resolve() / job_id


def _format_error(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; `cgrpo submit --help` lists the sections)"
    more = len(exc.errors()) - 1
    return f"{source}: {where}: {message}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def parse_config(data: dict, source: str = "job config") -> JobConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (name, model, rollout, ...)")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


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


def config_reference() -> str:
    """docs/config.md, generated from the schema so that the two cannot drift apart."""
    lines = ["# Job config reference", "",
             "A job is one YAML file; each top-level section maps 1:1 onto a pydantic model in",
             "`orchestrator/config.py`. Unknown fields are errors (a typo never silently falls back to",
             "a default). Defaults follow the ml-diffucoder recipe (DESIGN.md §3);",
             "`orchestrator/demo.yaml` shows a 2-core sizing and `deploy/examples/` multi-GPU ones.",
             "Regenerate with `python -c 'from orchestrator.config import config_reference as c; print(c())' "
             "> docs/config.md`.", ""]
    for name, field in JobConfig.model_fields.items():
        section = field.annotation
        if not hasattr(section, "model_fields"):
            lines += [f"## `{name}`", "", f"default `{field.default!r}`: {field.description}", ""]
            continue
        lines += [f"## `{name}`", "", "| field | default | meaning |", "|---|---|---|"]
        for fname, f in section.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default
            lines.append(f"| `{name}.{fname}` | `{default!r}` | {f.description or ''} |")
        lines.append("")
    return "\n".join(lines)
