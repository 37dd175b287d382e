import json

import pytest
import torch

import dllm
from dllm.errors import DLLMError
from tests.conftest import MASK


@pytest.mark.parametrize("fixture", ["tiny_dream", "tiny_llada"])
def test_save_load_round_trip_gives_identical_logits(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    x = torch.randint(0, 60, (3, 12))
    before = model(x)
    dllm.save_model(model, tmp_path)
    loaded = dllm.load_model(tmp_path)
    assert torch.equal(loaded(x), before)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model.raw_config["model_type"]


def test_weight_names_match_published_layouts(tiny_dream, tiny_llada):
    dream = set(tiny_dream.checkpoint_state_dict())
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
            "model.layers.0.self_attn.q_proj.bias", "model.layers.1.mlp.gate_proj.weight"} <= dream
    llada = set(tiny_llada.checkpoint_state_dict())
    assert {"model.transformer.wte.weight", "model.transformer.ff_out.weight", "model.transformer.ln_f.weight",
            "model.transformer.blocks.0.attn_out.weight", "model.transformer.blocks.1.ff_proj.weight",
            "model.transformer.blocks.1.up_proj.weight"} <= llada
    assert not any(k.startswith("model.layers") for k in llada)


def _raw_backbone_logits(model, x):
    return model.lm_head(model._hidden_states(x, None))


def test_logit_shift_applied_for_dream_not_llada(tiny_dream, tiny_llada):
    x = torch.randint(0, 60, (2, 9))
    raw = _raw_backbone_logits(tiny_dream, x)
    assert torch.allclose(tiny_dream(x)[:, 1:], raw[:, :-1])
    assert not torch.allclose(tiny_dream(x)[:, 1:], raw[:, 1:])
    raw = _raw_backbone_logits(tiny_llada, x)
    assert torch.allclose(tiny_llada(x), raw)


@pytest.mark.parametrize("fixture", ["tiny_dream", "tiny_llada"])
def test_attention_is_bidirectional(fixture, request):
    model = request.getfixturevalue(fixture)
    x = torch.randint(0, 60, (1, 10))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 60
    # an early position must see a change at the end of the sequence
    assert not torch.allclose(model(x)[0, 2], model(y)[0, 2])


def test_padding_is_hidden_from_real_tokens(tiny_dream):
    x = torch.randint(0, 60, (1, 8))
    padded = torch.cat([torch.tensor([[5, 7, 9]]), x], 1)
    attn = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)], 1)
    # positions differ (rotary), so compare a model with the pad hidden vs another pad content
    other = padded.clone()
    other[0, :3] = torch.tensor([11, 13, 17])
    assert torch.allclose(tiny_dream(padded, attn)[:, 4:], tiny_dream(other, attn)[:, 4:], atol=1e-5)


def test_missing_files_raise_clear_errors(tmp_path, tiny_dream):
    with pytest.raises(DLLMError, match="does not exist"):
        dllm.load_model(tmp_path / "nope")
    with pytest.raises(DLLMError, match="config.json is missing"):
        dllm.load_model(tmp_path)
    dllm.save_model(tiny_dream, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(DLLMError, match="no \\*.safetensors"):
        dllm.load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DLLMError, match="not valid JSON"):
        dllm.load_model(tmp_path)


def test_wrong_model_type_and_mismatched_weights(tmp_path, tiny_dream):
    dllm.save_model(tiny_dream, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DLLMError, match="shape"):
        dllm.load_model(tmp_path)
    cfg["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DLLMError, match="model_type"):
        dllm.load_model(tmp_path)


def test_sharded_checkpoint_loads(tmp_path, tiny_dream):
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in tiny_dream.checkpoint_state_dict().items()}
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / shard))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: s for s, ks in shards.items() for k in ks}}))
    (tmp_path / "config.json").write_text(json.dumps(tiny_dream.raw_config))
    x = torch.randint(0, 60, (1, 6))
    assert torch.equal(dllm.load_model(tmp_path)(x), tiny_dream(x))


def test_elbo_loss_is_the_weighted_masked_nll_and_trainable(tiny_dream):
    """The ELBO of a batch equals (1/t)-weighted cross-entropy at the masked positions over the
    maskable count, recomputed by hand from the same draws."""
    x = torch.randint(0, 60, (4, 10))
    maskable = torch.zeros_like(x, dtype=torch.bool)
    maskable[:, 4:] = True
    loss = dllm.elbo_loss(tiny_dream, x, maskable, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    t = 1e-3 + (1 - 1e-3) * torch.rand(4, generator=gen)
    noisy, masked = dllm.forward_process(x, maskable, t, MASK, gen)
    logp = torch.log_softmax(tiny_dream(noisy).float(), -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
    by_hand = (-logp * masked / t.view(-1, 1)).sum() / maskable.sum()
    assert masked.any() and float(loss) == pytest.approx(float(by_hand), rel=1e-5)
    loss.backward()
    assert float(tiny_dream.lm_head.weight.grad.abs().sum()) > 0
    with pytest.raises(DLLMError):
        dllm.elbo_loss(tiny_dream, x, torch.zeros_like(maskable))


def test_forward_process_masks_at_ratio_and_never_outside_region():
    x = torch.zeros((4, 2000), dtype=torch.long)
    region = torch.zeros_like(x, dtype=torch.bool)
    region[:, 1000:] = True
    noisy, masked = dllm.forward_process(x, region, torch.tensor([0.0, 0.3, 0.7, 1.0]), MASK,
                                         torch.Generator().manual_seed(0))
    assert not masked[:, :1000].any()
    frac = masked[:, 1000:].float().mean(1)
    assert frac[0] == 0 and frac[3] == 1
    assert abs(frac[1] - 0.3) < 0.05 and abs(frac[2] - 0.7) < 0.05
    assert torch.equal(noisy == MASK, masked)
