"""Tokens/s of cgrpo's batched sampler vs. a deliberately plain reference loop.

The plain loop is the textbook algorithm written the obvious way: one sequence at a time,
fresh tensors every step, a full softmax over the vocabulary at every position (masked or
not), then entropy confidence and top-k commit. Both run on the same model, prompts and
seed, interleaved in one process, so machine noise hits both alike.

    python bench/sampler.py [--batch 16] [--new-tokens 32] [--steps 32]

Last line: ``speedup: X.XX`` (target >= 2.0).
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

import dllm  # noqa: E402
from bench._common import best_of, bench_model, ordinary_token_ids  # noqa: E402
from dllm.sampler import tokens_per_step  # noqa: E402


def plain_generate(model, prompt: list[int], new_tokens: int, steps: int, temperature: float, seed: int) -> list[int]:
    """Reference loop: one sequence, full-vocabulary softmax everywhere, new tensors each step."""
    gen = torch.Generator().manual_seed(seed)
    seq = list(prompt) + [model.mask_token_id] * new_tokens
    for quota in tokens_per_step(new_tokens, steps):
        x = torch.tensor([seq])
        with torch.no_grad():
            logits = model(x)[0]
        probs = torch.softmax(logits / temperature, dim=-1)  # every position, whole vocabulary
        candidates = []
        for pos in range(len(prompt), len(seq)):
            if seq[pos] != model.mask_token_id:
                continue
            p = probs[pos].clone()
            p[model.mask_token_id] = 0
            p = p / p.sum()
            token = int(torch.multinomial(p, 1, generator=gen))
            entropy = float((p * torch.log(p.clamp_min(1e-12))).sum())
            candidates.append((entropy, pos, token))
        candidates.sort(reverse=True)
        for _, pos, token in candidates[:quota]:
            seq[pos] = token
    return seq[len(prompt):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="prompts per run")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, what = bench_model()
    gen = torch.Generator().manual_seed(0)
    prompts = [ordinary_token_ids(model, int(n), gen) for n in torch.randint(12, 24, (args.batch,), generator=gen)]
    tokens = args.batch * args.new_tokens

    def ours():
        dllm.generate(model, prompts, max_new_tokens=args.new_tokens, steps=args.steps,
                      temperature=args.temperature, alg="entropy", seed=0)

    def plain():
        for i, p in enumerate(prompts):
            plain_generate(model, p, args.new_tokens, args.steps, args.temperature, seed=i)

    ours()  # warm-up
    t_plain = best_of(plain, repeats=2)
    t_ours = best_of(ours, repeats=3)
    print(f"model: {what}")
    print(f"batch {args.batch}, {args.new_tokens} new tokens, {args.steps} steps, T={args.temperature}")
    print(f"plain reference loop : {tokens / t_plain:9.1f} tokens/s ({t_plain:.2f} s)")
    print(f"cgrpo batched sampler: {tokens / t_ours:9.1f} tokens/s ({t_ours:.2f} s)")
    print(f"speedup: {t_plain / t_ours:.2f}")


if __name__ == "__main__":
    main()
