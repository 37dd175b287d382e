"""Job config validation: one clear error per mistake, before any Ray resource."""

import subprocess
import sys

import pytest
import yaml

from orchestrator.config import ConfigError, JobConfig, load_config, parse_config, with_overrides
from orchestrator.recipe import TaskCursor


def test_defaults_follow_the_reference_recipe():
    cfg = JobConfig()
    assert (cfg.grpo.estimator, cfg.grpo.t_range) == ("coupled", (0.2, 0.8))
    assert (cfg.grpo.beta, cfg.grpo.epsilon, cfg.grpo.num_iterations) == (0.01, 0.5, 2)
    assert cfg.grpo.ref_sync_every == 64 and cfg.grpo.scale_rewards is False
    sampling = cfg.rollout.sampling
    assert cfg.grpo.num_generations == 10 and sampling.temperature == 1.2 and sampling.alg == "entropy"
    assert sampling.steps == sampling.max_new_tokens == 256 and sampling.top_p == 0.95
    assert cfg.learner.lr == 1e-6 and cfg.learner.max_grad_norm == 0.2 and cfg.learner.weight_decay == 0.1


@pytest.mark.parametrize("data, message", [
    ({"rollout": {"actors": 0}}, "rollout.actors"),
    ({"rollout": {"sampling": {"alg": "beam"}}}, "rollout.sampling.alg"),
    ({"rollout": {"sampling": {"steps": 64, "max_new_tokens": 32}}}, "cannot exceed max_new_tokens"),
    ({"rollout": {"temperature": 1.0}}, "rollout.temperature: unknown field"),
    ({"rollout": {"sampling": {"block_size": 5, "steps": 32, "max_new_tokens": 32}}}, "must divide max_new_tokens"),
    ({"rollout": {"sampling": {"block_size": 8, "steps": 2, "max_new_tokens": 32}}}, "at least the number of blocks"),
    ({"rollout": {"sampling": {"cache": "full"}}}, "rollout.sampling.cache"),
    ({"rollout": {"sampling": {"threshold": 0.9}}}, "need alg maskgit_plus or topk_margin"),
    ({"rollout": {"sampling": {"alg": "maskgit_plus", "threshold": 0.9, "factor": 1.0}}}, "not both"),
    ({"grpo": {"estimator": "exact"}}, "grpo.estimator"),
    ({"grpo": {"t_range": [0.9, 0.1]}}, "t_range must satisfy"),
    ({"sandbox": {"limits": {"memory_mb": 1}}}, "job.yaml: sandbox limit memory_mb=1 is out of range"),
    ({"sandbox": {"limits": {"wall": 1}}}, "sandbox.limits.wall: unknown field"),
    ({"sandbox": {"rewards": {"code_weight": -1}}}, "reward code_weight=-1"),
    ({"learner": {"adam_betas": [0.9, 1.5]}}, "adam_betas must both be in"),
    ({"learner": {"zero_stage": 4}}, "learner.zero_stage"),
    ({"sandbox": {"backend": "vm"}}, "sandbox.backend"),
    ({"model": {"path": "/nowhere"}}, "no model folder"),
    ({"rollot": {}}, "unknown field"),
    ({"run": {"mode": "fast"}}, "run.mode"),
])
def test_each_mistake_names_its_field(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "job.yaml")


def test_yaml_errors_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_demo_and_deploy_examples_validate(repo_root):
    from orchestrator.config import demo_config
    assert demo_config().rollout.actors >= 1
    for path in sorted((repo_root / "deploy" / "examples").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data.setdefault("model", {})["path"] = "models/tiny-dllm"  # cluster paths do not exist here
        parse_config(data, str(path))


def test_long_schedule_changes_only_the_steps_and_the_rate_of_the_demo_recipe():
    """bench/learning.py and `cgrpo experiment` claim to train the demo's recipe: anything else
    drifting apart from demo.yaml would make that untrue."""
    from orchestrator.config import demo_config, long_schedule_config

    demo, long = demo_config().model_dump(), long_schedule_config().model_dump()
    changed = {(section, key) for section in demo for key in demo[section]
               if isinstance(demo[section], dict) and demo[section][key] != long[section][key]}
    assert changed == {("learner", "lr"), ("run", "steps")}
    assert long["run"]["steps"] > demo["run"]["steps"] and long["learner"]["lr"] > demo["learner"]["lr"]


def test_cli_prints_the_error_without_traceback(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("learner:\n  workers: -1\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "learner.workers" in proc.stderr and "Traceback" not in proc.stderr


def test_task_cursor_is_deterministic_and_resumable():
    tasks = list(range(10))
    a = TaskCursor(tasks, seed=1)
    first = a.take(7) + a.take(7)
    b = TaskCursor(tasks, seed=1)
    b.take(7)
    resumed = TaskCursor(tasks, seed=1, position=b.position)
    assert resumed.take(7) == first[7:]
    assert sorted(first[:10]) == tasks  # one epoch covers every task once


def test_config_reference_doc_is_current(repo_root):
    from orchestrator.config import config_reference
    assert (repo_root / "docs" / "config.md").read_text().strip() == config_reference().strip()


def test_config_algorithms_are_the_samplers():
    import typing

    import dllm
    from rollout.config import SamplingConfig
    assert typing.get_args(SamplingConfig.model_fields["alg"].annotation) == dllm.ALGORITHMS


def test_sampling_fields_are_the_samplers_keyword_arguments():
    """rollout.sampling reaches dllm.generate unrenamed: every field is one of its parameters."""
    import inspect

    import dllm
    from rollout.config import SamplingConfig
    params = inspect.signature(dllm.generate).parameters
    keyword_only = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(SamplingConfig.model_fields) <= keyword_only - {"seed"}


def test_half_steps_keeps_a_step_per_block():
    from rollout.config import SamplingConfig
    blocks = SamplingConfig(max_new_tokens=48, steps=6, block_size=8)
    assert blocks.half_steps().steps == 6 and SamplingConfig(max_new_tokens=48, steps=48).half_steps().steps == 24


def test_learner_lr_reaches_the_deepspeed_optimizer_unchanged():
    from learner.worker import deepspeed_config
    cfg = parse_config({"learner": {"lr": 3.5e-4, "max_grad_norm": 0.7, "zero_stage": 1}}, "job.yaml")
    ds = deepspeed_config(cfg.learner, world_size=2, bf16=False)
    assert ds["optimizer"]["params"]["lr"] == 3.5e-4 and ds["gradient_clipping"] == 0.7
    assert ds["zero_optimization"]["stage"] == 1 and ds["train_batch_size"] == 2


def test_overrides_reach_nested_blocks_and_name_bad_paths():
    cfg = with_overrides(JobConfig(), ["rollout.sampling.temperature=0.7", "learner.lr=2e-4", "grpo.t_range=[0.3, 0.6]"])
    assert cfg.rollout.sampling.temperature == 0.7 and cfg.learner.lr == 2e-4 and cfg.grpo.t_range == (0.3, 0.6)
    with pytest.raises(ConfigError, match="rollout.sampling.temprature: unknown field"):
        with_overrides(JobConfig(), ["rollout.sampling.temprature=0.7"])
    with pytest.raises(ConfigError, match="no config section 'rollot'"):
        with_overrides(JobConfig(), ["rollot.actors=2"])
    with pytest.raises(ConfigError, match="expected SECTION.FIELD=VALUE"):
        with_overrides(JobConfig(), ["learner"])
