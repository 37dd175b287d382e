"""AR -> diffusion adaptation (`cgrpo adapt`) on tiny random Qwen2/Llama causal LMs made here.

The real SmolLM2 GGUF is exercised in tests/test_adapt_smollm2.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import dllm
from modelprep.adapt import AdaptConfig, adapt, causal_equivalence_error, shift_error
from modelprep.errors import ModelPrepError
from modelprep.pretrain import read_source, stdlib_files
from orchestrator.cli import main as cli_main


def _tokenizer_without_mask() -> PreTrainedTokenizerFast:
    """A small byte-level BPE with only an EOS, like an AR model's tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([read_source(p) for p in stdlib_files(200_000)], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _save_ar(tmp_path, arch: str, tied: bool = False):
    tokenizer = _tokenizer_without_mask()
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied, eos_token_id=tokenizer.eos_token_id,
                  rope_parameters={"rope_type": "default", "rope_theta": 50000.0})
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
        with torch.no_grad():  # make the q/k/v biases matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(std=0.5)
    folder = tmp_path / f"ar-{arch}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.eval(), tokenizer


@pytest.mark.parametrize("arch,tied", [("llama", False), ("llama", True), ("qwen2", False)])
def test_conversion_keeps_the_function_and_the_shift(tmp_path, arch, tied):
    folder, ar_model, ar_tokenizer = _save_ar(tmp_path, arch, tied)
    out = tmp_path / "dream"
    summary = adapt(AdaptConfig(source=str(folder), out=str(out), steps=0, threads=1), log=lambda m: None)

    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == "Dream" and raw["tie_word_embeddings"] is tied
    assert raw["rope_parameters"]["rope_theta"] == 50000.0
    dlm = dllm.load_model(out)
    tokenizer = dllm.load_tokenizer(out)
    # A mask token was added and the embeddings grew by one row.
    assert len(tokenizer) == len(ar_tokenizer) + 1
    assert dlm.mask_token_id == tokenizer.mask_token_id == len(ar_tokenizer)
    assert dlm.vocab_size == len(ar_tokenizer) + 1
    state = dlm.state_dict()
    if arch == "llama":  # Qwen2 blocks gained q/k/v biases, all zero
        assert float(state["model.layers.0.self_attn.q_proj.bias"].abs().max()) == 0.0
    else:  # the source's biases are kept
        assert torch.equal(state["model.layers.1.self_attn.k_proj.bias"], ar_model.model.layers[1].self_attn.k_proj.bias)

    # Run causally, the converted weights are the AR model; and the logits at a mask right
    # after a one-token prompt are the AR model's next-token logits (the shift is kept).
    ids = torch.tensor([ar_tokenizer("def add(a, b):\n    return a + b\n")["input_ids"]])
    assert summary["causal_equivalence_error"] < 1e-4 and summary["shift_error"] < 1e-4
    assert causal_equivalence_error(ar_model, dlm, ids) < 1e-4
    assert shift_error(ar_model, dlm, ids[0].tolist()) < 1e-4
    # ... and the attention really is bidirectional now: a later token changes an earlier output.
    a = dlm(ids)[0, 2]
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % len(ar_tokenizer)
    assert not torch.allclose(a, dlm(changed)[0, 2])


def test_adaptation_training_lowers_the_diffusion_loss(tmp_path):
    folder, _, _ = _save_ar(tmp_path, "llama")
    out = tmp_path / "dream"
    summary = adapt(AdaptConfig(source=str(folder), out=str(out), steps=40, batch_size=8, seq_len=32, lr=3e-3,
                                warmup_steps=2, threads=1, stdlib_bytes=200_000), log=lambda m: None)
    assert len(summary["losses"]) == 40
    # Same held-out chunks, same noise: the masked-diffusion loss went down.
    assert summary["heldout_elbo_after"] < summary["heldout_elbo_before"] - 0.3
    dlm = dllm.load_model(out)  # the trained folder loads and samples
    out_gen = dllm.generate(dlm, [[5, 6, 7]], max_new_tokens=8, steps=4, seed=0)
    assert out_gen.sequences.shape == (1, 11)
    assert json.loads((out / "adapt.json").read_text())["steps"] == 40


def test_cli_adapt_and_its_errors(tmp_path, capsys):
    folder, _, _ = _save_ar(tmp_path, "qwen2")
    out = tmp_path / "dream"
    assert cli_main(["adapt", "--from", str(folder), "--out", str(out), "--steps", "2", "--seq-len", "16",
                     "--batch-size", "2", "--threads", "1"]) == 0
    assert "qwen2 -> Dream" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    assert cli_main(["adapt", "--from", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ModelPrepError, match="a file must be a .gguf"):
        adapt(AdaptConfig(source=str(out / "config.json"), out=str(tmp_path / "x")))
    dream = dllm.dream_config(64, 63, 62, 61)
    bad = tmp_path / "not-ar"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(dream))
    assert cli_main(["adapt", "--from", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert "is a 'Dream' model; adapt supports qwen2 and llama" in capsys.readouterr().err
