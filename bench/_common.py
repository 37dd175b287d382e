"""Helpers shared by the benches: the model to measure and a side-by-side timer."""

from __future__ import annotations

import time
from pathlib import Path

import torch

import dllm

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "tiny-dllm"


def bench_model() -> tuple[torch.nn.Module, str]:
    """The shipped tiny dLLM when present, else a seeded random model of similar size."""
    if (SHIPPED / "config.json").is_file():
        return dllm.load_model(SHIPPED), f"shipped model {SHIPPED.relative_to(REPO)}"
    config = dllm.dream_config(1024, 1023, 1022, 1021, hidden_size=128, num_layers=4, num_heads=4,
                               num_kv_heads=2, intermediate_size=384)
    return dllm.init_model(config, seed=0).eval(), "random tiny Dream model (models/tiny-dllm absent)"


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` runs: the least noisy figure on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ordinary_token_ids(model, count: int, generator: torch.Generator) -> list[int]:
    """Random token ids that are none of the model's special ids ([MASK], EOS, pad)."""
    special = {model.mask_token_id, model.eos_token_id, model.pad_token_id} - {None}
    ids = torch.randint(0, model.vocab_size, (count,), generator=generator).tolist()
    ordinary = next(i for i in range(model.vocab_size) if i not in special)
    return [i if i not in special else ordinary for i in ids]
