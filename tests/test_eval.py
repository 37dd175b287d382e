"""pass@k evaluation: the estimator, sandboxed scoring of explicit completions, a real (tiny,
random) dLLM through ``evaluate`` and ``cgrpo eval``, and the CLI's user-error handling."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.evaluate import encode_prompt, evaluate, evaluate_completions, generate_completions, truncate_completion
from evaluation.stats import mean_and_se, mean_pass_at_k, paired_difference, pass_at_k, pass_at_k_estimate
from orchestrator.cli import main as cgrpo
from tasks import TaskError, builtin_tasks

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- estimator (pure)

@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),            # c/n
    (5, 2, 2, 0.7),            # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 1, 5, 0.5),           # 1 - C(9,5)/C(10,5) = 1 - 126/252
    (10, 3, 8, 1.0),           # n - c < k: every draw of 8 contains a correct one
    (10, 0, 8, 0.0),
    (4, 4, 1, 1.0),
    (8, 1, 8, 1.0),
    (20, 5, 4, 1 - 1365 / 4845),  # 1 - C(15,4)/C(20,4)
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_formula_and_rejects_bad_input():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert mean_pass_at_k([(4, 1), (4, 3)], 1) == pytest.approx(0.5)
    for bad in ((4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_standard_errors_are_over_tasks_and_paired_differences_use_each_task_once():
    est = pass_at_k_estimate([(4, 4), (4, 0), (4, 2), (4, 2)], 1)
    assert est.mean == pytest.approx(0.5) and est.tasks == 4
    assert est.se == pytest.approx(math.sqrt(((0.5 ** 2) * 2 / 3) / 4))  # sample sd of (1, 0, .5, .5) / sqrt(4)
    assert mean_and_se([0.3]).se == 0.0 and mean_and_se([]).tasks == 0
    before, after = [(4, 1), (4, 2), (4, 0)], [(4, 3), (4, 3), (4, 1)]
    diff = paired_difference(before, after)
    assert diff.mean == pytest.approx(1.0 / 3)  # per-task gains .5, .25, .25
    assert diff.se == pytest.approx(math.sqrt(sum((g - 1 / 3) ** 2 for g in (0.5, 0.25, 0.25)) / 2 / 3))
    # pairing removes the spread between tasks: the unpaired se of the two means is far larger
    unpaired = math.hypot(pass_at_k_estimate(before).se, pass_at_k_estimate(after).se)
    assert diff.se < unpaired / 2
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference(before, after[:2])


def test_truncate_completion_stops_at_top_level_code():
    assert truncate_completion("    return a\n\ndef g():\n    pass\n") == "    return a\n\n"
    assert truncate_completion("    x = 1\n    return x\nprint(1)") == "    x = 1\n    return x\n"
    assert truncate_completion("    return a") == "    return a"


# ---------------------------------------------------------------- sandboxed scoring

@pytest.fixture(scope="module")
def sandbox_ready():
    sandbox = pytest.importorskip("sandbox")
    if getattr(sandbox, "run_program", None) is None:
        pytest.skip("sandbox.run_program is not available yet")
    return sandbox


def test_evaluate_completions_runs_each_program_in_the_sandbox(sandbox_ready):
    tasks = builtin_tasks("heldout")[:3]
    right = [t.canonical_solution for t in tasks]
    completions = [
        [right[0]] * 4,                                                   # 4/4
        [right[1], "    return None\n", "    return (\n", right[1]],     # 2/4: wrong, syntax error
        ["    import os\n    os._exit(0)\n", "    while True:\n        pass\n",
         "    raise ValueError('no')\n", "    return None\n"],              # 0/4
    ]
    out = evaluate_completions(tasks, completions, k_list=[1, 2, 4], workers=2,
                               limits=sandbox_ready.Limits(wall_s=1.5, cpu_s=1.5))
    assert [t["correct"] for t in out["per_task"]] == [4, 2, 0]
    assert out["pass_at_k"]["1"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert out["pass_at_k"]["2"] == pytest.approx((1 + pass_at_k(4, 2, 2) + 0) / 3)
    assert out["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert out["programs_run"] == 1 + 3 + 4  # identical (task, completion) pairs run once
    assert out["statuses"].get("passed") == 6 and out["statuses"].get("timeout", 0) >= 1
    with pytest.raises(TaskError, match="raise --n"):
        evaluate_completions(tasks, completions, k_list=[8])


def test_evaluate_with_a_real_tiny_dllm(sandbox_ready, tiny_model_dir):
    import dllm

    model, tok = dllm.load_model(tiny_model_dir), dllm.load_tokenizer(tiny_model_dir)
    tasks = builtin_tasks("heldout")[:3]
    kwargs = dict(k_list=[1, 2], temperature=1.0, steps=4, max_new_tokens=8, batch_size=4, seed=7, keep_samples=3)
    out = evaluate(model, tok, tasks, **kwargs)
    assert set(out["pass_at_k"]) == {"1", "2"} and out["n"] == 2 and out["num_tasks"] == 3
    assert sum(out["statuses"].values()) == 6 and 1 <= out["programs_run"] <= 6
    counts = [(t["n"], t["correct"]) for t in out["per_task"]]  # the table is the per-task counts' mean
    assert [t["task_id"] for t in out["per_task"]] == [t.task_id for t in tasks] and all(n == 2 for n, _ in counts)
    assert out["pass_at_k"]["1"] == pytest.approx(mean_pass_at_k(counts, 1))
    assert out["pass_at_k"]["2"] == pytest.approx(mean_pass_at_k(counts, 2))
    assert out["pass_at_k_se"]["1"] == pytest.approx(pass_at_k_estimate(counts, 1).se)
    assert out["statuses"].get("passed", 0) == sum(c for _, c in counts)
    assert out["steps"] == 4 and out["completion_tokens"] <= 6 * 8
    again = evaluate(model, tok, tasks, **kwargs)
    assert again["samples"] == out["samples"]  # deterministic for a seed


def test_generate_completions_samples_through_the_jobs_blocks_and_cache(tiny_model_dir):
    """Evaluation with the job's sampler must decode exactly as dllm.generate does with its
    blocks and cache (the bench compares models through it)."""
    import dllm

    model, tok = dllm.load_model(tiny_model_dir), dllm.load_tokenizer(tiny_model_dir)
    tasks = builtin_tasks("heldout")[:2]
    sampler = dict(temperature=1.0, steps=4, max_new_tokens=8, top_p=None, seed=3)
    got, _ = generate_completions(model, tok, tasks, n=1, block_size=4, cache="dual", batch_size=1, **sampler)
    prompts = [encode_prompt(tok, task.prompt) for task in tasks]
    for b, i in enumerate(sorted(range(len(tasks)), key=lambda i: len(prompts[i]))):  # batched by length
        ids = dllm.generate(model, [prompts[i]], block_size=4, cache="dual", **{**sampler, "seed": 3 + b})
        assert got[i] == [tok.decode(ids.completions[0], skip_special_tokens=True)]
    plain, _ = generate_completions(model, tok, tasks, n=1, batch_size=1, **sampler)
    assert plain != got  # the blocks and cache reached the sampler


# ---------------------------------------------------------------- CLI

def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys, tiny_model_dir):
    cases = [
        (["eval", "--split", "dev"], "split 'dev' is unknown"),
        (["eval", "--model", str(tmp_path / "missing")], "does not exist"),
        (["eval", "--model", str(tmp_path)], "lacks config.json"),
        (["eval", "--model", str(tiny_model_dir), "--k", "1", "8", "--n", "4"], "raise --n to >= 8"),
        (["eval", "--model", str(tiny_model_dir), "--steps", "99", "--max-new-tokens", "8"], "--steps"),
        (["eval", "--model", str(tiny_model_dir), "--block-size", "5", "--max-new-tokens", "8"], "--block-size"),
        (["eval", "--model", str(tiny_model_dir), "--split", f"jsonl:{tmp_path / 'x.jsonl'}"], "does not exist"),
    ]
    for argv, message in cases:
        assert cgrpo(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    # and as a real process: exit status 2, one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "eval", "--split", "nope"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "split 'nope' is unknown" in proc.stderr


def test_cli_data_stats_counts_every_source(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x"}\n')
    assert cgrpo(["data", "stats", "--jsonl", str(bad), "--json", str(tmp_path / "stats.json")]) == 0
    printed = capsys.readouterr().out
    assert "humaneval" in printed and "mbpp" in printed and "codeio" in printed
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["humaneval"]["loaded"] == 164 and stats["mbpp"]["loaded"] == 397
    assert stats["builtin/train"]["loaded"] >= 2000 and stats["builtin/heldout"]["loaded"] >= 200
    assert stats["codeio"]["raw"] == stats["codeio"]["loaded"] + stats["codeio"]["rejected"] + stats["codeio"][
        "not_built"]
    mine = stats[f"jsonl:{bad}"]
    assert mine["loaded"] == 0 and mine["rejected"] == 1 and mine["rejections"][0]["where"].endswith(":1")


def test_cli_eval_end_to_end(sandbox_ready, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = cgrpo(["eval", "--model", str(tiny_model_dir), "--split", "heldout", "--limit", "2", "--k", "1", "2",
                "--temperature", "0.2", "1.2", "--max-new-tokens", "8", "--steps", "4", "--half-steps",
                "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "pass@1" in table and "pass@2" in table
    runs = json.loads(out.read_text())["runs"]
    assert [(r["temperature"], r["steps"], r["steps_mode"]) for r in runs] == [
        (0.2, 4, "full"), (0.2, 2, "half"), (1.2, 4, "full"), (1.2, 2, "half")]
    assert all(r["num_tasks"] == 2 and r["n"] == 2 and set(r["pass_at_k"]) == {"1", "2"} for r in runs)


def test_cli_eval_against_a_baseline_is_paired_task_by_task(sandbox_ready, tiny_model_dir, tmp_path, capsys):
    shipped = str(REPO / "models" / "tiny-dllm")
    common = ["--split", "validation", "--limit", "6", "--k", "1", "--n", "4", "--temperature", "1.0",
              "--block-size", "16", "--cache", "dual"]
    out = tmp_path / "self.json"
    assert cgrpo(["eval", "--model", shipped, "--baseline", shipped, *common, "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    # against itself with the same seeds every completion repeats: no change, not even noise
    assert run["pass_at_k"]["1"] > 0 and run["vs_baseline"]["pass_at_k"] == run["pass_at_k"]
    assert run["vs_baseline"]["change"]["1"] == 0 and run["vs_baseline"]["change_se"]["1"] == 0
    assert "change +0.0 points (paired se 0.0)" in capsys.readouterr().out

    out = tmp_path / "vs_random.json"
    assert cgrpo(["eval", "--model", shipped, "--baseline", str(tiny_model_dir), *common, "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    change = run["vs_baseline"]
    assert change["model"] == str(tiny_model_dir)
    assert change["change"]["1"] == pytest.approx(run["pass_at_k"]["1"] - change["pass_at_k"]["1"])
    assert change["change"]["1"] > 0 and change["change_se"]["1"] > 0
