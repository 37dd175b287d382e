"""bench/rollout_speed.py: the rule that picks the best setting, and a tiny end-to-end run."""

from __future__ import annotations

import re
import subprocess
import sys

from bench.rollout_speed import SETTINGS, TODAY, summary


def _tables(rates: dict[str, float], deltas: dict[str, tuple[float, float]]) -> tuple[dict, dict]:
    speed = {"model": "m", "batch": 8, "new_tokens": 256,
             "settings": {name: {"cpu": rates.get(name, 10.0), "wall": 1.0} for name in SETTINGS}}
    quality = {"model": "q", "tasks": 228, "samples": 4, "settings": {
        name: {"pass1": 0.2 + deltas.get(name, (0.0, 0.01))[0], "se": 0.02, "delta": deltas.get(name, (0.0, 0.01))[0],
               "se_delta": deltas.get(name, (0.0, 0.01))[1], "passes_per_token": 1.0, "parallel_fraction": 0.0,
               "arness_local": 0.5}
        for name in SETTINGS}}
    return speed, quality


def test_the_fastest_setting_that_keeps_quality_wins():
    names = [n for n in SETTINGS if n != TODAY]
    fast_but_worse, fast_and_kept, slow_and_better = names[0], names[1], names[2]
    speed, quality = _tables({TODAY: 10.0, fast_but_worse: 90.0, fast_and_kept: 60.0, slow_and_better: 20.0},
                             {fast_but_worse: (-0.03, 0.02), fast_and_kept: (-0.015, 0.02), slow_and_better: (0.05, 0.02)})
    assert summary(speed, quality) == (fast_and_kept, 6.0)


def test_no_setting_keeps_quality_means_todays_sampler_and_speedup_one():
    speed, quality = _tables({name: 50.0 for name in SETTINGS} | {TODAY: 10.0},
                             {name: (-0.1, 0.01) for name in SETTINGS if name != TODAY})
    assert summary(speed, quality) == (TODAY, 1.0)


def test_bench_runs_end_to_end_and_ends_with_the_speedup_line(repo_root, tiny_model_dir, tmp_path):
    out_json = tmp_path / "tables.json"
    out = subprocess.run(
        [sys.executable, "bench/rollout_speed.py", "--model", str(tiny_model_dir), "--speed-model", str(tiny_model_dir),
         "--tasks", "2", "--samples", "1", "--quality-tokens", "16", "--batch", "2", "--new-tokens", "16",
         "--json", str(out_json)],
        cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"cached_parallel_speedup: \d+\.\d\d", lines[-1]), lines[-3:]
    for name in SETTINGS:
        assert any(line.startswith(name + " ") for line in lines), name
    again = subprocess.run(  # the quality part alone, reusing the speed table just written
        [sys.executable, "bench/rollout_speed.py", "--model", str(tiny_model_dir), "--speed-from", str(out_json),
         "--tasks", "2", "--samples", "1", "--quality-tokens", "16"],
        cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.split("\n")[0] == f"speed: reused from {out_json}", again.stdout[-1000:]
    assert again.stdout.strip().splitlines()[-1] == lines[-1]  # same speed table, same deterministic quality
