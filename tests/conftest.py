"""Shared fixtures: tiny random dLLMs (seconds on CPU) and the shipped model's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("CGRPO_REDIS_URL", "redis://127.0.0.1:6390/0")

VOCAB, MASK, EOS, PAD = 64, 63, 62, 61


@pytest.fixture
def tiny_dream():
    import dllm
    return dllm.init_model(dllm.dream_config(VOCAB, MASK, EOS, PAD, hidden_size=32, num_layers=2,
                                             num_heads=4, num_kv_heads=2, intermediate_size=64), seed=0)


@pytest.fixture
def tiny_llada():
    import dllm
    return dllm.init_model(dllm.llada_config(VOCAB, MASK, EOS, d_model=32, n_layers=2, n_heads=4,
                                             mlp_hidden_size=64), seed=0)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
