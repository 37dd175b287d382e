"""Coupled-GRPO math without Ray or DeepSpeed: loss, advantages, config, batch format, sharded estimates."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import dllm
from dllm.schedule import warmup_cosine
from errors import ConfigError, validated
from learner import (
    GRPOConfig,
    LearnerConfig,
    LearnerError,
    RolloutBatch,
    collate,
    completion_mask_from_eos,
    group_advantages,
    grpo_token_loss,
)
from learner.grpo import batch_logps, global_passes

NEW = [[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]]
OLD = [[-1.2, -2.0, -0.9], [-1.0, -0.7, -2.0]]
REF = [[-1.1, -1.8, -0.5], [-1.5, -1.0, -2.5]]
ADV = [1.0, -0.5]
MASK = [[1, 1, 1], [1, 1, 0]]


def _hand(eps: float, beta: float):
    """The loss of docs/design.md token by token in plain Python floats."""
    total, count, per_seq, kls, clipped = 0.0, 0, [], 0.0, 0
    for i in range(2):
        seq_sum, seq_n = 0.0, 0
        for k in range(3):
            if not MASK[i][k]:
                continue
            rho, a = math.exp(NEW[i][k] - OLD[i][k]), ADV[i]
            policy = -min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
            d = REF[i][k] - NEW[i][k]
            kl = math.exp(d) - d - 1
            total += policy + beta * kl
            seq_sum += policy + beta * kl
            count += 1
            seq_n += 1
            kls += kl
            clipped += (rho > 1 + eps and a > 0) or (rho < 1 - eps and a < 0)
        per_seq.append(seq_sum / seq_n)
    return total / count, sum(per_seq) / len(per_seq), kls / count, clipped / count


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_loss_equals_hand_computed_value_on_two_completions():
    tokens_loss, seq_loss, kl, clip = _hand(0.2, 0.1)
    assert tokens_loss == pytest.approx(-0.4986588320624431, abs=1e-12)  # worked out once by hand
    loss, m = grpo_token_loss(_t(NEW), _t(OLD), _t(REF), _t(ADV), _t(MASK), epsilon=0.2, beta=0.1)
    assert float(loss) == pytest.approx(tokens_loss, abs=1e-12)
    assert m["kl"] == pytest.approx(kl, abs=1e-12)
    assert m["clip_frac"] == pytest.approx(0.6) == pytest.approx(clip)
    assert m["tokens"] == 5
    loss_seq, _ = grpo_token_loss(_t(NEW), _t(OLD), _t(REF), _t(ADV), _t(MASK), epsilon=0.2, beta=0.1,
                                  normalisation="sequence")
    assert float(loss_seq) == pytest.approx(seq_loss, abs=1e-12)
    assert float(loss_seq) != pytest.approx(float(loss))


def test_masked_positions_and_denominator():
    new = _t(NEW).clone()
    new[1, 2] = -float("inf")  # garbage after EOS must not leak into loss or gradient
    new.requires_grad_(True)
    loss, _ = grpo_token_loss(new, _t(OLD), _t(REF), _t(ADV), _t(MASK), epsilon=0.2, beta=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(new.grad).all() and new.grad[1, 2] == 0
    # a global denominator (data-parallel shards) rescales the token sum
    half, _ = grpo_token_loss(_t(NEW), _t(OLD), _t(REF), _t(ADV), _t(MASK), epsilon=0.2, beta=0.1, denominator=10.0)
    assert float(half) == pytest.approx(float(loss.detach()) / 2, abs=1e-12)


def test_zero_advantage_gives_zero_policy_gradient():
    new = _t(NEW).requires_grad_(True)
    loss, _ = grpo_token_loss(new, _t(OLD), None, torch.zeros(2, dtype=torch.float64), _t(MASK), beta=0.0)
    loss.backward()
    assert float(loss.detach()) == 0 and torch.count_nonzero(new.grad) == 0


def test_zero_advantage_gives_zero_gradient_through_the_model(tiny_dream):
    torch.manual_seed(0)
    seqs = torch.randint(0, 60, (4, 12))
    batch = RolloutBatch(seqs, torch.ones_like(seqs), 5, torch.ones(4, 7), torch.zeros(4))
    cfg = GRPOConfig(beta=0.0)
    old = batch_logps(tiny_dream, batch, cfg, seed=3).detach()
    for adv, expect_zero in ((torch.zeros(4), True), (torch.tensor([1.0, -1.0, 0.5, -0.5]), False)):
        tiny_dream.zero_grad()
        new = batch_logps(tiny_dream, batch, cfg, seed=3)
        loss, _ = grpo_token_loss(new, old, None, adv, batch.completion_mask, beta=0.0)
        loss.backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in tiny_dream.parameters() if p.grad is not None))
        assert (float(norm) == 0.0) == expect_zero


def test_clip_engages_outside_the_trust_region():
    eps = 0.2
    old = torch.zeros(1, 4, dtype=torch.float64)
    new = torch.log(torch.tensor([[0.7, 0.9, 1.1, 1.4]], dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(1, 4)
    # positive advantage: only the ratio above 1+eps is clipped (zero gradient there)
    loss, m = grpo_token_loss(new, old, None, torch.tensor([1.0]), mask, epsilon=eps, beta=0.0)
    loss.backward()
    assert m["clip_frac"] == pytest.approx(0.25) and m["ratio_max"] == pytest.approx(1.4)
    assert new.grad[0, 3] == 0 and (new.grad[0, :3] != 0).all()
    # negative advantage: only the ratio below 1-eps is clipped
    new.grad = None
    loss, m = grpo_token_loss(new, old, None, torch.tensor([-1.0]), mask, epsilon=eps, beta=0.0)
    loss.backward()
    assert m["clip_frac"] == pytest.approx(0.25) and new.grad[0, 0] == 0 and (new.grad[0, 1:] != 0).all()
    # inside [1-eps, 1+eps] nothing is clipped
    _, m = grpo_token_loss(torch.log(torch.tensor([[0.9, 1.1]])), torch.zeros(1, 2), None, torch.tensor([1.0]),
                           torch.ones(1, 2), epsilon=eps, beta=0.0)
    assert m["clip_frac"] == 0.0


def test_kl_is_zero_when_policy_equals_reference(tiny_dream):
    loss, m = grpo_token_loss(_t(NEW), _t(NEW), _t(NEW), torch.zeros(2, dtype=torch.float64), _t(MASK), beta=1.0)
    assert m["kl"] == 0.0 and float(loss) == 0.0
    # the same masks (same seed) on a copy of the policy: the estimated KL is exactly zero
    torch.manual_seed(1)
    seqs = torch.randint(0, 60, (3, 10))
    batch = RolloutBatch(seqs, torch.ones_like(seqs), 4, torch.ones(3, 6), torch.tensor([1.0, 0.0, -1.0]))
    cfg = GRPOConfig()
    ref = copy.deepcopy(tiny_dream)
    new = batch_logps(tiny_dream, batch, cfg, seed=9)
    with torch.no_grad():
        ref_l = batch_logps(ref, batch, cfg, seed=9)
        other_seed = batch_logps(ref, batch, cfg, seed=10)
    _, m = grpo_token_loss(new, new.detach(), ref_l, batch.advantages, batch.completion_mask)
    assert m["kl"] == pytest.approx(0.0, abs=1e-7)
    _, m_other = grpo_token_loss(new, new.detach(), other_seed, batch.advantages, batch.completion_mask)
    assert m_other["kl"] > 1e-4  # different masks would not cancel


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(r, num_generations=4)
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    scaled = group_advantages(r.view(2, 4), scale_rewards=True)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()
    assert torch.allclose(scaled[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(scaled[1], torch.zeros(4))  # equal rewards: no signal, no division blow-up
    with pytest.raises(LearnerError, match="groups of 3"):
        group_advantages(r, num_generations=3)


def test_negative_weight_scales_only_below_mean_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 1.0, 1.0]])
    plain = group_advantages(r)
    half = group_advantages(r, negative_weight=0.5)
    assert torch.equal(half[plain > 0], plain[plain > 0])
    assert torch.allclose(half[plain < 0], 0.5 * plain[plain < 0])
    assert torch.equal(group_advantages(r, negative_weight=0.0).clamp(max=0), torch.zeros_like(r))


def test_config_defaults_follow_the_reference_recipe():
    c = GRPOConfig()
    assert (c.estimator, c.num_pairs, c.t_range, c.full_pass_included, c.p_mask_prompt) == \
        ("coupled", 1, (0.2, 0.8), True, 0.0)
    assert (c.random_masking, c.mask_seed, c.num_generations, c.num_iterations) == (True, 42, 10, 2)
    assert (c.beta, c.ref_sync_every, c.epsilon, c.scale_rewards, c.loss_normalisation) == \
        (0.01, 64, 0.5, False, "tokens")
    lc = LearnerConfig()
    assert (lc.lr, lc.min_lr_ratio, lc.max_grad_norm, lc.adam_betas, lc.weight_decay) == \
        (1e-6, 0.1, 0.2, (0.9, 0.99), 0.1)
    assert all(f.description for f in [*GRPOConfig.model_fields.values(), *LearnerConfig.model_fields.values()])


@pytest.mark.parametrize("model, bad, field", [
    (GRPOConfig, {"estimator": "exact"}, "grpo.estimator"), (GRPOConfig, {"t_range": (0.5, 0.2)}, "t_range"),
    (GRPOConfig, {"epsilon": 1.5}, "grpo.epsilon"), (GRPOConfig, {"num_generations": 1}, "grpo.num_generations"),
    (GRPOConfig, {"beta": -0.1}, "grpo.beta"), (GRPOConfig, {"num_iteration": 2}, "grpo.num_iteration: unknown"),
    (GRPOConfig, {"negative_weight": 1.5}, "grpo.negative_weight"),
    (LearnerConfig, {"zero_stage": 4}, "learner.zero_stage"), (LearnerConfig, {"lr": 0}, "learner.lr"),
    (LearnerConfig, {"adam_betas": (0.9, 1.2)}, "adam_betas"),
])
def test_bad_config_values_name_the_field(model, bad, field):
    prefix = "grpo" if model is GRPOConfig else "learner"
    with pytest.raises(ConfigError, match=field):
        validated(model, bad, source="job.yaml", prefix=prefix)


def test_lr_schedule_warms_up_then_decays_cosine_to_ten_percent():
    assert warmup_cosine(0, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(50, 0.5) == pytest.approx(0.55)
    assert warmup_cosine(100, 1.0) == pytest.approx(0.1) == warmup_cosine(500, 5.0)
    assert warmup_cosine(0, 0.0, warmup_steps=4) == pytest.approx(0.25)
    assert warmup_cosine(3, 0.03, warmup_steps=4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.03)))


def test_completion_mask_keeps_tokens_through_first_eos():
    seqs = torch.tensor([[5, 6, 1, 2, 62, 62, 9], [5, 6, 1, 2, 3, 4, 9]])
    assert completion_mask_from_eos(seqs, 2, 62).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_collate_left_pads_prompts_and_keeps_logps(tiny_dream):
    torch.manual_seed(2)
    a = RolloutBatch(torch.randint(0, 60, (2, 9)), torch.ones(2, 9, dtype=torch.long), 4, torch.ones(2, 5),
                     torch.tensor([1.0, -1.0]), step=3)
    b_seqs = torch.randint(0, 60, (1, 10))
    b = RolloutBatch(b_seqs, torch.ones(1, 10, dtype=torch.long), 6, torch.tensor([[1.0, 1, 1, 0]]),
                     torch.tensor([0.5]), step=2)
    merged = collate([a, b], pad_token_id=61)
    assert merged.prompt_len == 6 and merged.sequences.shape == (3, 11) and merged.step == 2
    assert merged.attention_mask[:2, :2].sum() == 0 and merged.attention_mask[2, 10] == 0
    assert merged.completion_mask[2].tolist() == [1, 1, 1, 0, 0]
    assert torch.equal(merged.sequences[:2, 2:], a.sequences)
    # left padding hidden by the attention mask does not change the completion log-probs
    cfg = GRPOConfig(estimator="d1", d1_p_mask_prompt=0.0)
    with torch.no_grad():
        alone = batch_logps(tiny_dream, a, cfg, seed=1)
        inside = batch_logps(tiny_dream, merged, cfg, seed=1)[:2]
    assert torch.allclose(alone, inside, atol=1e-5)


def test_batch_rejects_mismatched_shapes():
    with pytest.raises(LearnerError, match="completion_mask"):
        RolloutBatch(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8), 3, torch.ones(2, 4), torch.zeros(2))
    with pytest.raises(LearnerError, match="advantages"):
        RolloutBatch(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8), 3, torch.ones(2, 5),
                     torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize("estimator", ["coupled", "decoupled", "d1"])
def test_sharded_estimates_equal_the_dllm_estimator_on_the_whole_batch(tiny_dream, estimator):
    torch.manual_seed(3)
    seqs = torch.randint(0, 60, (6, 15))
    attn = torch.ones_like(seqs)
    attn[0, :2] = 0  # a left-padded prompt
    batch = RolloutBatch(seqs, attn, 5, torch.ones(6, 10), torch.zeros(6))
    cfg = GRPOConfig(estimator=estimator, num_pairs=2, p_mask_prompt=0.3, d1_num_passes=3)
    with torch.no_grad():
        whole = dllm.estimate_logps(estimator, tiny_dream, seqs, 5, attn, seed=17, **cfg.estimator_kwargs())
        mine = batch_logps(tiny_dream, batch, cfg, seed=17)
        shards = torch.cat([batch_logps(tiny_dream, s, cfg, seed=17) for s in batch.shard(3)])
    assert torch.allclose(mine, whole, atol=1e-6)
    assert torch.allclose(shards, whole, atol=1e-5)


def test_shard_pads_with_empty_rows():
    seqs = torch.zeros(5, 8, dtype=torch.long)
    batch = RolloutBatch(seqs, torch.ones_like(seqs), 3, torch.ones(5, 5), torch.ones(5))
    shards = batch.shard(2, multiple=2)
    assert [s.size for s in shards] == [4, 4] and [s.row_offset for s in shards] == [0, 4]
    assert all(s.global_size == 8 for s in shards)
    assert shards[1].completion_mask[1:].sum() == 0 and shards[1].advantages[1:].sum() == 0


def test_kl_clamp_bounds_a_collapsed_token_and_leaves_the_others():
    """One token whose new log-prob fell 12 nats below the reference: k3 = e^12 - 13 ≈ 1.6e5.
    Clamped, its KL term is the bound and gives no gradient; the other tokens are untouched."""
    new = torch.tensor([[-1.0, -13.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.1, -1.0, -2.0]], dtype=torch.float64)
    adv, mask = torch.tensor([0.0], dtype=torch.float64), torch.ones(1, 3)
    raw, m_raw = grpo_token_loss(new, new.detach(), ref, adv, mask, beta=1.0)
    assert m_raw["kl"] > 5e4
    clamped, m = grpo_token_loss(new, new.detach(), ref, adv, mask, beta=1.0, kl_clamp=10.0)
    small = math.exp(-0.1) + 0.1 - 1.0  # the first token's k3, below the bound
    assert float(clamped.detach()) == pytest.approx((small + 10.0 + 0.0) / 3)
    clamped.backward()
    assert new.grad[0, 1] == 0 and new.grad[0, 0] != 0


def _grad_norm(model) -> float:
    return float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None)))


@pytest.mark.parametrize("estimator", ["coupled", "decoupled"])
def test_group_masks_read_a_group_through_one_mask_and_shard_consistently(tiny_dream, estimator):
    cfg = GRPOConfig(estimator=estimator, num_generations=3, group_masks=True)
    passes = global_passes(cfg, 6, 40, 5, seed=4, device="cpu")
    for p in passes:
        for rows in (p.completion_masked, p.weight):
            assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2]) and torch.equal(rows[3], rows[5])
        assert not torch.equal(p.completion_masked[0], p.completion_masked[3])
    plain = global_passes(GRPOConfig(estimator=estimator), 6, 40, 5, seed=4, device="cpu")
    assert not torch.equal(plain[0].completion_masked[0], plain[0].completion_masked[1])
    torch.manual_seed(5)
    seqs = torch.randint(0, 60, (6, 15))
    batch = RolloutBatch(seqs, torch.ones_like(seqs), 5, torch.ones(6, 10), torch.zeros(6))
    with torch.no_grad():
        whole = batch_logps(tiny_dream, batch, cfg, seed=17)
        shards = torch.cat([batch_logps(tiny_dream, s, cfg, seed=17) for s in batch.shard(2)])
    assert torch.allclose(shards, whole, atol=1e-5)


def test_group_masks_cancel_what_a_group_agrees_on(tiny_dream):
    """Four identical completions with zero-sum advantages: through shared masks their
    gradients cancel; through each row's own masks they do not."""
    torch.manual_seed(6)
    seqs = torch.randint(0, 60, (1, 14)).repeat(4, 1)
    batch = RolloutBatch(seqs, torch.ones_like(seqs), 5, torch.ones(4, 9), torch.zeros(4))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    norms = {}
    for shared in (True, False):
        cfg = GRPOConfig(num_generations=4, group_masks=shared, beta=0.0)
        tiny_dream.zero_grad()
        new = batch_logps(tiny_dream, batch, cfg, seed=8)
        loss, _ = grpo_token_loss(new, new.detach(), None, adv, batch.completion_mask, beta=0.0)
        loss.backward()
        norms[shared] = _grad_norm(tiny_dream)
    assert norms[True] < 1e-6 < 1e-3 < norms[False]


def test_group_masks_need_whole_groups():
    with pytest.raises(LearnerError, match="not whole groups of 4"):
        global_passes(GRPOConfig(num_generations=4, group_masks=True), 6, 10, 5, seed=0, device="cpu")
