"""The experiment's report writer: table, verdict and plots from one run's results."""

from evaluation.report import write_report
from orchestrator.config import demo_config
from orchestrator.experiment import ESTIMATOR_SETTINGS


def _model(passed_full: list[int], half, p8):
    """8 tasks x 4 samples at full steps: ``passed_full`` per task."""
    p1 = sum(passed_full) / 32
    return {"pass1_full": p1, "pass1_half": half, "pass1_T1.2": p1 / 2, "pass8_T1.2": p8,
            "se": {"pass1_full": 0.05, "pass1_half": 0.04, "pass8_T1.2": 0.06},
            "counts": {"full": [[4, c] for c in passed_full]},
            "arness_T0.2": {"local": 0.8, "global": 0.9}, "arness_T1.2": {"local": 0.5, "global": 0.6},
            "eval_s": 1.0, "train_s": 60.0}


def test_report_states_the_verdict_honestly(tmp_path):
    results = {
        "settings": {"steps": 3, "seed": 0, "eval_tasks": 8, "machine": "x86_64, 2 cores",
                     "started": "2026-01-01 00:00:00", "wall_s": 600.0,
                     "config": demo_config().model_dump(mode="json")},
        # coupled gains one pass on each of the first 4 tasks (paired +12.5 points, se 4.7);
        # decoupled scores higher overall; d1 equals the baseline
        "models": {"baseline": _model([0, 1, 1, 2, 0, 1, 1, 2], 0.15, 0.5),
                   "coupled": _model([1, 2, 2, 3, 0, 1, 1, 2], 0.22, 0.6),
                   "decoupled": _model([2, 2, 2, 3, 1, 1, 1, 2], 0.20, 0.6),
                   "d1": _model([0, 1, 1, 2, 0, 1, 1, 2], 0.10, 0.5)},
        "curves": {n: [{"step": s, "reward_mean": 0.1 * s, "pass_rate": 0.05 * s} for s in (1, 2, 3)]
                   for n in ESTIMATOR_SETTINGS},
        "evals": {n: [{"step": s, "mode": m, "pass_at_1": 0.2 + 0.01 * s} for s in (0, 3) for m in ("full", "half")]
                  for n in ESTIMATOR_SETTINGS},
    }
    out = tmp_path / "results.md"
    write_report(results, out, "cgrpo experiment --steps 3")
    text = out.read_text()
    assert "| coupled | 37.5% ± 5.0 | +12.5 (se 4.7) | 22.0% ± 4.0 | +15.5 | 60.0% ± 6.0 |" in text
    assert "by +12.5 points (paired se 4.7)" in text and "not met" in text  # 12.5 < 3 x 4.7
    assert "coupled minus decoupled: -6.2 points (paired se 4.1; within two standard errors)" in text
    assert "coupled minus d1: +12.5 points" in text
    assert "**decoupled**" in text and "coupled did not win" in text
    assert "10.0 points before RL, 15.5 after (not smaller after RL)" in text
    assert "results/pass_vs_step.png" in text
    for png in ("reward_curves.png", "pass_vs_step.png", "pass_rates.png", "arness_vs_temperature.png"):
        assert (tmp_path / "results" / png).stat().st_size > 1000


def test_overrides_change_the_demo_config_and_reject_mistakes():
    import pytest

    from orchestrator.config import ConfigError, with_overrides

    cfg = with_overrides(demo_config(), ["learner.lr=2e-4", "rollout.sampling.temperature=0.8", "grpo.beta=0"])
    assert (cfg.learner.lr, cfg.rollout.sampling.temperature, cfg.grpo.beta) == (2e-4, 0.8, 0.0)
    for bad, says in (("learner.lr", "SECTION.FIELD=VALUE"), ("nosuch.lr=1", "no config section"),
                      ("learner.lrr=1", "lrr"), ("learner.lr=-1", "lr")):
        with pytest.raises(ConfigError, match=says):
            with_overrides(demo_config(), [bad])


def test_command_line_reproduces_the_run_from_its_saved_settings():
    from orchestrator.experiment import command_line

    results = {"settings": {"steps": 120, "seed": 0, "eval_tasks": 228, "pass1_samples": 4,
                            "overrides": ["learner.lr=0.0001"], "config": {"run": {"eval_every": 40}}},
               "models": {"baseline": {}, "coupled": {}}}
    assert command_line(results) == ("cgrpo experiment --steps 120 --eval-every 40 --eval-tasks 228 "
                                     "--pass1-samples 4 --seed 0 --estimators coupled --set learner.lr=0.0001")


def test_report_from_a_missing_or_foreign_file_is_one_clear_error(tmp_path, capsys):
    from orchestrator.cli import main

    assert main(["experiment", "--report-from", str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["experiment", "--report-from", str(tmp_path / "bad.json")]) == 2
    assert "is not JSON" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"a": 1}')
    assert main(["experiment", "--report-from", str(tmp_path / "other.json")]) == 2
    assert "not a results.json" in capsys.readouterr().err
