"""The experiment's report: docs/results.md and its plots, rendered from one run's results
(``cgrpo experiment`` writes them; ``--report-from`` re-renders a saved run)."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.stats import paired_difference

# (results key, counts key, k) of the figures compared task by task between two models
_PAIRED = {"pass1_full": ("full", 1), "pass1_half": ("half", 1), "pass8_T1.2": ("hot", 8)}


def _cell(m: dict, key: str) -> str:
    se = (m.get("se") or {}).get(key)
    return f"{100 * m[key]:.1f}%" + (f" ± {100 * se:.1f}" if se is not None else "")


def paired_change(a: dict, b: dict, key: str = "pass1_full"):
    """``b - a`` on ``key``, task by task, as an Estimate (None when a run lacks the counts)."""
    mode, k = _PAIRED[key]
    ca, cb = (a.get("counts") or {}).get(mode), (b.get("counts") or {}).get(mode)
    if not ca or not cb or len(ca) != len(cb):
        return None
    return paired_difference([tuple(x) for x in ca], [tuple(x) for x in cb], k)


def _change(a: dict, b: dict, key: str = "pass1_full") -> str:
    diff = paired_change(a, b, key)
    return "-" if diff is None else f"{100 * diff.mean:+.1f} (se {100 * diff.se:.1f})"


def _plot_pass_vs_step(plt, evals: dict, path: Path) -> None:
    """Held-out pass@1 at T=0.2 against RL step, full (solid) and half (dashed) steps."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, points) in enumerate(evals.items()):
        colour = f"C{i}"
        for mode, style in (("full", "-"), ("half", "--")):
            pts = sorted((e["step"], e["pass_at_1"]) for e in points if e["mode"] == mode)
            if pts:
                ax.plot(*zip(*pts), style, marker="o", color=colour, label=f"{name} ({mode} steps)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out pass@1, T=0.2")
    ax.set_title("pass@1 during training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out: Path, command: str) -> None:
    """docs/results.md and its plots, from one run's results (also saved as JSON)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = out.parent / "results"
    figures.mkdir(exist_ok=True)
    (figures / "results.json").write_text(json.dumps(results, indent=1))
    models = results["models"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, curve) in enumerate(results["curves"].items()):
        steps = [c["step"] for c in curve]
        rewards = [c["reward_mean"] if c["reward_mean"] is not None else float("nan") for c in curve]
        # Every job sees the same prompts with the same seeds, so the step-to-step swings are
        # prompt difficulty; the 10-step mean shows the trend, raw values stay faint behind it.
        ax.plot(steps, rewards, color=f"C{i}", alpha=0.25, linewidth=0.8)
        window = [sum(rewards[max(0, j - 9): j + 1]) / len(rewards[max(0, j - 9): j + 1]) for j in range(len(rewards))]
        ax.plot(steps, window, color=f"C{i}", label=f"{name} (10-step mean)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean reward")
    ax.set_title("training reward per estimator")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figures / "reward_curves.png", dpi=110)
    _plot_pass_vs_step(plt, results.get("evals", {}), figures / "pass_vs_step.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(models)
    for i, key in enumerate(("pass1_full", "pass1_half", "pass8_T1.2")):
        ax.bar([x + 0.27 * i for x in range(len(names))], [models[n][key] for n in names], width=0.27, label=key)
    ax.set_xticks([x + 0.27 for x in range(len(names))], names)
    ax.set_ylabel("held-out pass rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figures / "pass_rates.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in names:
        ax.plot([0.2, 1.2], [models[name]["arness_T0.2"]["local"], models[name]["arness_T1.2"]["local"]],
                marker="o", label=f"{name} local")
        ax.plot([0.2, 1.2], [models[name]["arness_T0.2"]["global"], models[name]["arness_T1.2"]["global"]],
                marker="x", linestyle="--", label=f"{name} global")
    ax.set_xlabel("temperature")
    ax.set_ylabel("AR-ness@1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / "arness_vs_temperature.png", dpi=110)
    s = results["settings"]
    base = models["baseline"]
    rows = ["| model | pass@1 T=0.2 (full steps) | change vs. start (paired) | pass@1 T=0.2 (half steps) | "
            "drop at half | pass@8 T=1.2 | local / global AR-ness T=0.2 | local / global AR-ness T=1.2 | train time |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        rows.append(f"| {name} | {_cell(m, 'pass1_full')} | {_change(base, m) if name != 'baseline' else ''} | "
                    f"{_cell(m, 'pass1_half')} | {100 * (m['pass1_full'] - m['pass1_half']):+.1f} | "
                    f"{_cell(m, 'pass8_T1.2')} | {m['arness_T0.2']['local']:.2f} / {m['arness_T0.2']['global']:.2f} | "
                    f"{m['arness_T1.2']['local']:.2f} / {m['arness_T1.2']['global']:.2f} | "
                    f"{m.get('train_s', 0) / 60:.1f} min |")
    trained = {n: m for n, m in models.items() if n != "baseline"}
    best = max(trained, key=lambda n: trained[n]["pass1_full"]) if trained else None
    verdict = []
    if best:
        coupled = trained.get("coupled", {})
        gain = paired_change(base, coupled) if coupled else None
        if gain is not None:
            verdict.append(f"- coupled-GRPO changed held-out pass@1 by {100 * gain.mean:+.1f} points (paired se "
                           f"{100 * gain.se:.1f}) over the starting model (target: ≥ +10 points and ≥ 3 se: "
                           f"{'met' if gain.mean >= 0.10 and gain.mean >= 3 * gain.se else 'not met'}).")
        for other in ("decoupled", "d1"):
            diff = paired_change(trained[other], coupled) if coupled and other in trained else None
            if diff is not None:
                verdict.append(f"- coupled minus {other}: {100 * diff.mean:+.1f} points (paired se {100 * diff.se:.1f}"
                               f"; {'beyond' if abs(diff.mean) >= 2 * diff.se else 'within'} two standard errors).")
        top = [n for n in trained if trained[n]["pass1_full"] == trained[best]["pass1_full"]]
        if len(top) > 1:
            verdict.append(f"- best estimator by held-out pass@1: a tie between {', '.join(top)}")
        else:
            verdict.append(f"- best estimator by held-out pass@1: **{best}**" +
                           ("" if best == "coupled" else " — coupled did not win this run; see the curves below."))
        if "coupled" in trained:
            before = base["pass1_full"] - base["pass1_half"]
            after = trained["coupled"]["pass1_full"] - trained["coupled"]["pass1_half"]
            verdict.append(f"- drop at half steps: {before * 100:.1f} points before RL, {after * 100:.1f} after "
                           f"({'smaller' if after < before else 'not smaller'} after RL).")
    train_rows = ["| estimator | mean reward, first 10 steps | mean reward, last 10 steps | change |", "|---|---|---|---|"]
    for name, curve in results["curves"].items():
        first = [c["reward_mean"] for c in curve[:10] if c["reward_mean"] is not None]
        last = [c["reward_mean"] for c in curve[-10:] if c["reward_mean"] is not None]
        if first and last:
            a, b = sum(first) / len(first), sum(last) / len(last)
            train_rows.append(f"| {name} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    one_task = 100.0 / max(s["eval_tasks"], 1)
    job = s["config"]
    r, sb, lr, g = job["rollout"], job["sandbox"], job["learner"], job["grpo"]
    samples = s["steps"] * job["run"]["prompts_per_step"] * g["num_generations"]
    overrides = s.get("overrides") or []
    text = "\n".join([
        "# Results: does coupled-GRPO learn here?", "",
        f"Produced by `{command}` on {s['started']} ({s['machine']}), seed {s['seed']}, "
        f"{s['steps']} RL steps per estimator, {s['eval_tasks']} held-out built-in tasks, "
        f"total wall time {s['wall_s'] / 60:.1f} min. Every number below comes from that run "
        "(raw data: `docs/results/results.json`).", "",
        "Equal forward-pass budgets per log-prob estimate: coupled = full pass + 1 complementary pair (3 passes), "
        "decoupled = full pass + 2 independent masks (3), d1 = 3 fully masked passes with random prompt masks.", "",
        *rows, "", *verdict, "",
        f"One held-out task is {one_task:.1f} points of pass@1 here; pass@1 at T=0.2 averages "
        f"{s.get('pass1_samples', 1)} completion(s) per task, sampled like the rollouts (blocks of "
        f"{r['sampling'].get('block_size')}, cache {r['sampling'].get('cache')}). ± is the standard error over "
        "tasks; changes are "
        "paired (each task against itself, same sampling seed), so their standard error is smaller than the two "
        "scores' together. "
        "Training reward (maximum 2.5: 2 × fraction of tests passed + 0.5 for a well-formed run), averaged over the "
        "first and last ten steps of each job. Every job draws the same prompts with the same sampling seeds "
        "(with `run.drop_equal_groups`, which of them are kept depends on each job's rewards), so the curves "
        "swing together with prompt difficulty and the gap between them is the estimators' effect:",
        "", *train_rows, "",
        "![reward curves](results/reward_curves.png)", "",
        "![pass@1 vs step](results/pass_vs_step.png)", "",
        "![pass rates](results/pass_rates.png)", "",
        "![AR-ness vs temperature](results/arness_vs_temperature.png)", "",
        "## How it was run", "",
        f"Each job is the demo job on the long schedule (`orchestrator/demo.yaml` with "
        "`orchestrator/config.py`'s `LONG_SCHEDULE`: "
        f"{r['actors']} rollout actors, {sb['workers']} sandbox "
        f"workers, {lr['workers']} DeepSpeed learner, G={g['num_generations']} completions for "
        f"{job['run']['prompts_per_step']} prompts per step at T={r['sampling']['temperature']}, lr {lr['lr']:g}, "
        f"μ={g['num_iterations']}, "
        f"β={g['beta']}, below-mean advantages × {g.get('negative_weight', 1)}, KL clamp {g.get('kl_clamp')})"
        + (f" with `{' '.join('--set ' + x for x in overrides)}`" if overrides else "")
        + " and only the estimator changed, run in-process on a local Ray cluster; the exported model "
        "of each job is then evaluated with `cgrpo eval`'s code on the held-out split, every program executed in "
        f"the sandbox. Each job saw {samples:,} RL samples (steps × prompts × G); DiffuCoder used 21K on a 7B model. "
        "The pass@1-vs-step curve comes from the job's own evaluations (one completion per task through the rollout "
        "actors, so noisier than the table).", "",
        "Why the numbers look the way they do, the scouting runs behind the chosen settings, and what would change "
        "them: [docs/learning.md](learning.md).", ""])
    out.write_text(text)
