"""Variance of the dLLM log-prob estimators at an equal number of forward passes.

Coupled-GRPO's claim (DiffuCoder §4): with complementary masks every completion token is
read once per pair, so the per-token log-prob estimate (and the policy gradient built on it)
varies less across mask draws than with independent masks at the same cost. This bench
measures it on a fixed batch of completions:

* ``coupled``   λ pairs of complementary masks + the full pass   (2λ + 1 passes)
* ``decoupled`` 2λ independent masks + the full pass             (2λ + 1 passes)
* ``d1``        2λ + 1 fully masked passes with random prompt masks, averaged

For each, over ``--seeds`` mask seeds: the variance of every completion token's estimate
(averaged over tokens), the variance of the GRPO policy gradient (its trace, E||g - ḡ||²,
and the variance of ||g||), and the time per estimate.

A randomly initialised model predicts nearly uniform tokens, which makes every estimator
look alike; so the model is ``models/tiny-dllm`` when it is shipped, else a seeded random
tiny Dream model first trained briefly (``--train-steps`` ELBO steps) on synthetic
structured sequences (arithmetic progressions: the completion follows from the prompt).

    python bench/estimator_variance.py [--seeds 48] [--batch 8] [--train-steps 300] [--synthetic]

Last line: ``coupled_over_decoupled_variance: X.XX`` (per-token variance ratio at λ = 1;
the method predicts < 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dllm
from dllm.masking import elbo_loss
from learner.batch import RolloutBatch, completion_mask_from_eos
from learner.config import GRPOConfig
from learner.grpo import batch_logps, group_advantages, grpo_token_loss

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-dllm"
VOCAB, MASK, EOS, PAD, BOS, SEP = 64, 63, 62, 61, 60, 59
MOD = 50  # progression values live in tokens 0..49


def _progressions(n: int, prompt_len: int, completion_len: int, generator: torch.Generator):
    """Prompt ``[BOS, start, stride, SEP]``; completion ``start + i*stride (mod 50)`` for a random
    length, then EOS and padding: every completion token is predictable from the prompt."""
    start = torch.randint(0, MOD, (n,), generator=generator)
    stride = torch.randint(1, 7, (n,), generator=generator)
    lengths = torch.randint(completion_len // 2, completion_len, (n,), generator=generator)
    prompt = torch.stack([torch.full((n,), BOS), start, stride, torch.full((n,), SEP)], 1)
    steps = torch.arange(1, completion_len + 1)
    completion = (start[:, None] + steps[None] * stride[:, None]) % MOD
    pos = torch.arange(completion_len)[None]
    completion = torch.where(pos < lengths[:, None], completion, torch.full_like(completion, PAD))
    completion = torch.where(pos == lengths[:, None], torch.full_like(completion, EOS), completion)
    assert prompt.shape[1] == prompt_len
    return torch.cat([prompt, completion], 1)


def trained_tiny_model(steps: int, completion_len: int, seed: int = 0):
    """A seeded random tiny Dream model after ``steps`` ELBO steps on progressions."""
    model = dllm.init_model(dllm.dream_config(VOCAB, MASK, EOS, PAD, hidden_size=64, num_layers=2, num_heads=4,
                                              num_kv_heads=2, intermediate_size=128), seed=seed)
    if steps <= 0:
        return model.eval(), 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        tokens = _progressions(64, 4, completion_len, gen)
        maskable = torch.zeros_like(tokens, dtype=torch.bool)
        maskable[:, 4:] = True
        loss = elbo_loss(model, tokens, maskable, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


def fixed_batch(model, shipped: bool, batch: int, completion_len: int, seed: int) -> RolloutBatch:
    """Completions sampled from the model itself (T = 1.0), as a rollout would produce them."""
    gen = torch.Generator().manual_seed(seed)
    if shipped:
        tok = dllm.load_tokenizer(SHIPPED)
        texts = ["def add(a, b):\n", "def is_even(n):\n", "def reverse(s):\n", "def square(x):\n"]
        prompts = [tok.encode(texts[i % len(texts)]) for i in range(batch)]
    else:
        prompts = _progressions(batch, 4, completion_len, gen)[:, :4].tolist()
    out = dllm.generate(model, prompts, max_new_tokens=completion_len, steps=completion_len, temperature=1.0,
                        top_p=0.95, alg="entropy", seed=seed)
    cmask = completion_mask_from_eos(out.sequences, out.prompt_len, model.eos_token_id)
    rewards = torch.rand(batch, generator=gen)
    adv = group_advantages(rewards, num_generations=batch)
    return RolloutBatch(out.sequences, out.attention_mask, out.prompt_len, cmask, adv)


def _policy_gradient(model, params, batch: RolloutBatch, config: GRPOConfig, seed: int) -> torch.Tensor:
    """The GRPO gradient at ratio 1 (old = new): -Σ A_i ∇logp_ik / T, flattened."""
    new = batch_logps(model, batch, config, seed=seed)
    loss, _ = grpo_token_loss(new, new.detach(), None, batch.advantages, batch.completion_mask, beta=0.0)
    g = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])


def measure(model, batch: RolloutBatch, configs: dict[str, GRPOConfig], seeds: int) -> dict[str, dict]:
    """Per-token variance, gradient variance and time per estimate over ``seeds`` mask seeds.

    The estimators take turns within each seed, so machine noise hits their timings alike.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    estimates = {name: [] for name in configs}
    grads = {name: [] for name in configs}
    times = {name: [] for name in configs}
    for s in range(seeds):
        for name, config in configs.items():
            with torch.no_grad():
                t0 = time.perf_counter()
                estimates[name].append(batch_logps(model, batch, config, seed=1000 + s))
                times[name].append(time.perf_counter() - t0)
            grads[name].append(_policy_gradient(model, params, batch, config, seed=1000 + s))
    out = {}
    mask = batch.completion_mask.bool()
    for name in configs:
        est = torch.stack(estimates[name])          # [S, B, N]
        g = torch.stack(grads[name])                # [S, P]
        norms = g.norm(dim=1)
        out[name] = {"token_var": float(est.var(0, unbiased=True)[mask].mean()),
                     "grad_var": float(((g - g.mean(0)) ** 2).sum(1).mean()),
                     "grad_norm_var": float(norms.var()), "grad_norm_mean": float(norms.mean()),
                     "ms_per_estimate": 1000 * statistics.median(times[name])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=48, help="mask seeds per estimator")
    parser.add_argument("--batch", type=int, default=8, help="completions in the fixed batch")
    parser.add_argument("--completion-len", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=300, help="ELBO steps when the shipped model is absent")
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2], help="λ values to compare")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the briefly trained synthetic model even when models/tiny-dllm exists")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 avoids OpenMP spinning on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    shipped = (SHIPPED / "config.json").is_file() and not args.synthetic
    if shipped:
        model, what = dllm.load_model(SHIPPED), f"shipped model {SHIPPED.name}"
    else:
        t0 = time.perf_counter()
        model, loss = trained_tiny_model(args.train_steps, args.completion_len)
        why = "--synthetic" if args.synthetic else "models/tiny-dllm absent"
        what = (f"seeded random tiny Dream model ({why}), trained {args.train_steps} ELBO steps "
                f"on synthetic progressions in {time.perf_counter() - t0:.0f}s (final ELBO {loss:.3f})")
    batch = fixed_batch(model, shipped, args.batch, args.completion_len, seed=0)
    print(f"model: {what}")
    print(f"batch: {batch.size} completions x {batch.completion_len} positions, "
          f"{batch.num_completion_tokens} completion tokens; {args.seeds} mask seeds per estimator")
    header = (f"{'estimator':<10} {'λ':>2} {'passes':>6} {'token var':>10} {'grad var':>10} "
              f"{'|g| var':>10} {'|g| mean':>9} {'ms/est':>7}")
    print(header)
    print("-" * len(header))
    ratio = None
    for pairs in args.pairs:
        passes = 2 * pairs + 1
        rows = {
            "coupled": GRPOConfig(estimator="coupled", num_pairs=pairs),
            "decoupled": GRPOConfig(estimator="decoupled", num_pairs=pairs),
            # d1 at the same budget: `passes` fully masked passes, each with its own prompt mask
            "d1": GRPOConfig(estimator="d1", d1_num_passes=passes),
        }
        results = measure(model, batch, rows, args.seeds)
        for name, r in results.items():
            print(f"{name:<10} {pairs:>2} {passes:>6} {r['token_var']:>10.4g} {r['grad_var']:>10.4g} "
                  f"{r['grad_norm_var']:>10.4g} {r['grad_norm_mean']:>9.4g} {r['ms_per_estimate']:>7.1f}")
        c, d = results["coupled"], results["decoupled"]
        print(f"  λ={pairs}: coupled/decoupled token variance {c['token_var'] / d['token_var']:.3f}, "
              f"gradient variance {c['grad_var'] / d['grad_var']:.3f}")
        if ratio is None:
            ratio = c["token_var"] / d["token_var"]
    print(f"coupled_over_decoupled_variance: {ratio:.2f}")


if __name__ == "__main__":
    main()
