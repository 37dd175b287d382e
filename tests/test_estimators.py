import pytest
import torch

import dllm
from dllm.errors import DLLMError
from dllm.estimators import (combine, complementary_masks, coupled_passes, decoupled_passes, estimate_logps,
                             pass_logps, passes_per_estimate)


def test_coupled_masks_are_exact_complements_covering_every_token_once():
    passes = coupled_passes(4, 50, 6, num_pairs=3, seed=1)
    assert len(passes) == 6
    for first, second in zip(passes[::2], passes[1::2]):
        assert not (first.completion_masked & second.completion_masked).any()
        assert (first.completion_masked | second.completion_masked).all()
        t = 1 / first.weight[0]
        assert 0.2 <= t <= 0.8
        assert second.weight[0] == pytest.approx(1 / (1 - t))
    coverage = torch.stack([p.completion_masked for p in passes]).sum(0)
    assert (coverage == 3).all()  # once per pair


def test_decoupled_leaves_some_tokens_uncovered():
    passes = decoupled_passes(4, 50, 6, num_pairs=1, seed=1)
    coverage = torch.stack([p.completion_masked for p in passes]).sum(0)
    assert (coverage == 0).any() and (coverage == 2).any()


def test_complementary_masks_respect_region():
    region = torch.zeros((2, 10), dtype=torch.bool)
    region[:, 3:] = True
    a, b = complementary_masks((2, 10), 0.5, torch.Generator().manual_seed(0), region)
    assert not (a | b)[:, :3].any() and (a | b)[:, 3:].all()


def test_same_seed_same_masks_different_seed_different_masks():
    a = coupled_passes(2, 30, 4, seed=5)
    b = coupled_passes(2, 30, 4, seed=5)
    c = coupled_passes(2, 30, 4, seed=6)
    assert all(torch.equal(x.completion_masked, y.completion_masked) for x, y in zip(a, b))
    assert not torch.equal(a[0].completion_masked, c[0].completion_masked)


def _batch():
    torch.manual_seed(0)
    return torch.randint(0, 60, (3, 14)), 5


def test_coupled_default_is_the_reference_three_pass_formula(tiny_dream):
    seqs, plen = _batch()
    est = dllm.coupled_logps(tiny_dream, seqs, plen, seed=11)
    passes = coupled_passes(3, 9, plen, seed=11)
    full = dllm.estimators.full_pass(3, 9, plen, "cpu")
    reads = pass_logps(tiny_dream, seqs, plen, [full] + passes)
    masked_in_first = passes[0].completion_masked
    pair_read = torch.where(masked_in_first, reads[1] * passes[0].weight[:, None], reads[2] * passes[1].weight[:, None])
    assert torch.allclose(est, (reads[0] + pair_read) / 2, atol=1e-6)
    # and one pass read equals a plain masked forward
    noisy = seqs.clone()
    noisy[:, plen:] = tiny_dream.mask_token_id
    direct = tiny_dream(noisy)[:, plen:].log_softmax(-1).gather(-1, seqs[:, plen:, None]).squeeze(-1)
    assert torch.allclose(reads[0], direct, atol=1e-6)


def test_estimates_are_deterministic_per_seed_and_differentiable(tiny_dream):
    seqs, plen = _batch()
    for name in ("coupled", "decoupled", "d1"):
        a = estimate_logps(name, tiny_dream, seqs, plen, seed=3)
        b = estimate_logps(name, tiny_dream, seqs, plen, seed=3)
        assert torch.equal(a, b) and a.shape == (3, 9)
        a.sum().backward()
    assert tiny_dream.lm_head.weight.grad is not None


def test_passes_run_in_one_batched_call(tiny_dream, monkeypatch):
    seqs, plen = _batch()
    calls = []
    original = type(tiny_dream).forward

    def counting(self, ids, attn=None):
        calls.append(ids.shape[0])
        return original(self, ids, attn)

    monkeypatch.setattr(type(tiny_dream), "forward", counting)
    dllm.coupled_logps(tiny_dream, seqs, plen, num_pairs=2)
    assert calls == [3 * 5]  # full + 2 pairs, stacked
    calls.clear()
    dllm.coupled_logps(tiny_dream, seqs, plen, num_pairs=2, max_batch=6)
    assert calls == [6, 6, 3]


def test_d1_masks_prompt_and_is_one_pass(tiny_dream):
    seqs, plen = _batch()
    no_prompt_mask = dllm.d1_logps(tiny_dream, seqs, plen, p_mask_prompt=0.0)
    with_prompt_mask = dllm.d1_logps(tiny_dream, seqs, plen, p_mask_prompt=0.5, seed=1)
    assert not torch.allclose(no_prompt_mask, with_prompt_mask)
    assert passes_per_estimate("d1") == 1
    assert passes_per_estimate("coupled", 1) == passes_per_estimate("decoupled", 1) == 3


def test_combine_weights_masked_reads():
    reads = torch.tensor([[[-1.0, -1.0]], [[-2.0, -3.0]], [[-4.0, -5.0]]])  # full, pass a, pass b
    passes = [dllm.estimators.Pass(torch.tensor([[True, False]]), torch.zeros((1, 0), dtype=torch.bool),
                                   torch.tensor([4.0])),
              dllm.estimators.Pass(torch.tensor([[False, True]]), torch.zeros((1, 0), dtype=torch.bool),
                                   torch.tensor([2.0]))]
    out = combine(reads, passes, num_pairs=1, with_full=True)
    assert torch.allclose(out, torch.tensor([[(-1 + 4 * -2) / 2, (-1 + 2 * -5) / 2]]))


@pytest.mark.parametrize("call, message", [
    (lambda m, s, p: estimate_logps("exact", m, s, p), "unknown estimator"),
    (lambda m, s, p: dllm.coupled_logps(m, s, p, num_pairs=0), "num_pairs"),
    (lambda m, s, p: dllm.coupled_logps(m, s, p, t_range=(0.0, 0.5)), "mask ratio range"),
    (lambda m, s, p: dllm.d1_logps(m, s, p, num_passes=0), "num_passes"),
])
def test_bad_estimator_arguments(tiny_dream, call, message):
    seqs, plen = _batch()
    with pytest.raises(DLLMError, match=message):
        call(tiny_dream, seqs, plen)
