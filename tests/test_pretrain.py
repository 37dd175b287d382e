"""`cgrpo pretrain`: tokenizer, batch layout, and a short real training run on a tiny config."""

from __future__ import annotations

import json

import pytest
import torch

import dllm
from modelprep.errors import ModelPrepError
from modelprep.pretrain import (EOS_TOKEN, MASK_TOKEN, PAD_TOKEN, Example, PretrainConfig, encode, pretrain,
                              problem_batch, read_source, special_ids, stdlib_files, train_tokenizer)
from orchestrator.cli import main as cli_main

CODE = 'def f(xs):\n    """Return the sum of xs, café ✓."""\n    return sum([x for x in xs if x > 2])\n'


def _tiny(out, **kw) -> PretrainConfig:
    base = dict(out=str(out), steps=24, threads=1, vocab_size=400, stdlib_bytes=150_000, chunk_len=32,
                max_new_tokens=40, val_size=8, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                intermediate_size=64, batch_size=8, lr=3e-3, warmup_steps=3, eval_every=12)
    base.update(kw)
    return PretrainConfig(**base)


def test_tokenizer_round_trip_and_special_ids(tmp_path):
    texts = [read_source(p) for p in stdlib_files(150_000)]
    tok = train_tokenizer(texts, vocab_size=400)
    assert special_ids(tok) == (0, 1, 2)
    assert (tok.eos_token, tok.pad_token, tok.mask_token) == (EOS_TOKEN, PAD_TOKEN, MASK_TOKEN)
    ids = encode(tok, CODE)
    assert tok.decode(ids) == CODE  # byte-level: any text, unicode included, round-trips
    assert not {0, 1, 2} & set(ids)  # no special token is added to plain text
    assert len(ids) < len(CODE.encode())  # merges were learned
    tok.save_pretrained(str(tmp_path))
    again = dllm.load_tokenizer(tmp_path)
    assert encode(again, CODE) == ids and again.mask_token_id == 2
    # Deterministic: the same texts give the same tokenizer.
    assert encode(train_tokenizer(texts, vocab_size=400), CODE) == ids
    with pytest.raises(ModelPrepError, match="too small"):
        train_tokenizer(texts, vocab_size=100)


def test_problem_batch_uses_the_samplers_layout(tiny_dream):
    examples = [Example((5, 6, 7), (9, 10)), Example((8,), (11, 12, 13))]
    tokens, attention, maskable = problem_batch(examples, 5, eos_id=0, pad_id=1, mask_prompt=False)
    # Prompts left-padded to the longest (3), then exactly 5 completion positions, EOS-padded.
    assert tokens.tolist() == [[5, 6, 7, 9, 10, 0, 0, 0], [1, 1, 8, 11, 12, 13, 0, 0]]
    assert attention.tolist() == [[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]]
    assert maskable.tolist() == [[False] * 3 + [True] * 5, [False] * 3 + [True] * 5]
    _, _, stage1 = problem_batch(examples, 5, eos_id=0, pad_id=1, mask_prompt=True)
    assert stage1.tolist() == [[True] * 8, [False, False] + [True] * 6]  # padding is never a target
    # The sampler lays out the same prompts the same way (with its model's pad id).
    tokens, attention, _ = problem_batch(examples, 5, eos_id=0, pad_id=tiny_dream.pad_token_id, mask_prompt=False)
    gen = dllm.generate(tiny_dream, [list(e.prompt) for e in examples], max_new_tokens=5, steps=5, seed=0)
    assert gen.prompt_len == 3
    assert torch.equal(gen.sequences[:, :3], tokens[:, :3]) and torch.equal(gen.attention_mask, attention)


def test_pretrain_writes_a_loadable_model_and_learns(tmp_path):
    out = tmp_path / "tiny"
    summary = pretrain(_tiny(out, steps=60, eval_every=30, save_every=30), log=lambda m: None)
    model = dllm.load_model(out)
    tokenizer = dllm.load_tokenizer(out)
    assert model.layout == "dream" and model.shift
    assert (model.eos_token_id, model.pad_token_id, model.mask_token_id) == special_ids(tokenizer)
    assert model.vocab_size == len(tokenizer) == 400
    saved = json.loads((out / "pretrain.json").read_text())
    assert saved["steps"] == 60 and saved["max_new_tokens"] == 40 and saved["config"]["seed"] == 0
    # The completion ELBO on set-aside train problems, with fixed noise, went down.
    history = summary["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == 60
    assert summary["final"]["val_loss"] < 0.7 * history[0]["val_loss"]
    assert all(0 <= r["val_copy"] <= 1 for r in history[1:]) and "val_exact" in summary["final"]
    # Checkpoints to choose where to stop: loadable models, each its step's weights.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-30", "step-60"]
    halfway = dllm.load_model(out / "checkpoints" / "step-30").state_dict()
    assert json.loads((out / "checkpoints" / "step-30" / "pretrain.json").read_text())["steps"] == 30
    assert not torch.equal(halfway["lm_head.weight"], model.state_dict()["lm_head.weight"])
    gen = dllm.generate(model, [encode(tokenizer, 'def f(a):\n    """Return a plus 1."""\n')],
                        max_new_tokens=16, steps=8, seed=0)
    assert gen.sequences.shape[1] > 16


def test_pretrain_is_reproducible_from_its_seed(tmp_path):
    a = pretrain(_tiny(tmp_path / "a", steps=6, eval_every=0, val_size=0), log=lambda m: None)
    b = pretrain(_tiny(tmp_path / "b", steps=6, eval_every=0, val_size=0), log=lambda m: None)
    c = pretrain(_tiny(tmp_path / "c", steps=6, eval_every=0, val_size=0, seed=1), log=lambda m: None)
    assert a["final"]["train_loss"] == b["final"]["train_loss"] != c["final"]["train_loss"]
    wa, wb = (dllm.load_model(tmp_path / n).state_dict() for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_stop_at_gives_the_full_schedules_checkpoint(tmp_path):
    """--stop-at N ends a --steps S run at step N: the same weights as that run's checkpoint N
    (the learning rate and stage switch follow S, not N)."""
    pretrain(_tiny(tmp_path / "full", steps=8, eval_every=4, val_size=4, save_every=4), log=lambda m: None)
    summary = pretrain(_tiny(tmp_path / "stopped", steps=8, eval_every=4, val_size=4, stop_at=4), log=lambda m: None)
    assert summary["steps"] == 4
    wa = dllm.load_model(tmp_path / "full" / "checkpoints" / "step-4").state_dict()
    wb = dllm.load_model(tmp_path / "stopped").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ModelPrepError, match="--stop-at"):
        pretrain(_tiny(tmp_path / "bad", steps=8, stop_at=9), log=lambda m: None)


def test_cli_pretrain_and_its_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["pretrain", "--out", str(out), "--steps", "4", "--threads", "1", "--vocab-size", "400",
            "--stdlib-bytes", "100000", "--hidden-size", "32", "--layers", "1", "--intermediate-size", "64",
            "--val-size", "0", "--eval-every", "0", "--batch-size", "4"]
    assert cli_main(argv) == 0
    assert "wrote" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert cli_main(argv[:4] + ["0"]) == 2
    assert "--steps must be > 0" in capsys.readouterr().err
    assert cli_main(argv + ["--heads", "3"]) == 2
    assert "--hidden-size must divide by --heads" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a budget is required
        cli_main(["pretrain", "--out", str(out)])


def test_pretrain_with_a_time_budget(tmp_path):
    summary = pretrain(_tiny(tmp_path / "timed", steps=None, minutes=0.05, eval_every=0, val_size=0),
                       log=lambda m: None)
    assert summary["steps"] > 0 and summary["train_seconds"] < 3 + 60  # 3 s budget, plus one step's overshoot
    assert dllm.load_model(tmp_path / "timed").vocab_size == 400
