"""Block-wise decoding, the prefix/dual KV cache and parallel (threshold, factor) commits."""

import pytest
import torch

import dllm
from dllm.errors import DLLMError
from dllm.model import KVCache
from dllm.sampler import _confidence, _draw, _left_pad, _probs, factor_rule, tokens_per_step
from tests.conftest import EOS, MASK, PAD, VOCAB

PROMPTS = [[1, 2, 3, 4, 5], [6, 7]]  # unequal: the second row is left-padded


def _model(layout: str, layers: int = 2):
    if layout == "dream":
        config = dllm.dream_config(VOCAB, MASK, EOS, PAD, hidden_size=32, num_layers=layers, num_heads=4,
                                   num_kv_heads=2, intermediate_size=64)
    else:
        config = dllm.llada_config(VOCAB, MASK, EOS, d_model=32, n_layers=layers, n_heads=4, mlp_hidden_size=64)
    return dllm.init_model(config, seed=0).eval()


@pytest.fixture(params=["dream", "llada"])
def model(request):
    return _model(request.param)


@torch.no_grad()
def _todays_sampler(model, prompt_ids, *, max_new_tokens, steps, temperature, top_p, alg, alg_temp, seed):
    """The sampler's loop as it was before blocks and caches existed (a frozen copy of its
    order of operations and random draws), to prove the new loop reproduces it exactly."""
    generator = torch.Generator().manual_seed(seed)
    prompt, prompt_attn = _left_pad(prompt_ids, model.pad_token_id, "cpu")
    batch, plen = prompt.shape
    x = torch.cat([prompt, torch.full((batch, max_new_tokens), MASK)], 1)
    attn = torch.cat([prompt_attn, torch.ones((batch, max_new_tokens), dtype=torch.long)], 1)
    order = torch.full((batch, max_new_tokens), -1)
    schedule = tokens_per_step(max_new_tokens, steps)
    for step, quota in enumerate(schedule):
        masked = order < 0
        probs = _probs(model(x, attn)[:, plen:][masked], temperature, top_p, None, MASK)
        drawn = _draw(probs, temperature, generator) if alg == "maskgit_plus" else None
        conf = torch.full(masked.shape, float("-inf"))
        conf[masked] = _confidence(probs, alg, drawn, generator).float()
        if step == len(schedule) - 1:
            commit = masked
        else:
            if alg_temp > 0:
                gumbel = -torch.log(-torch.log(torch.rand(conf.shape, generator=generator).clamp(1e-10, 1 - 1e-10)))
                conf = conf / alg_temp + gumbel
            top = conf.topk(min(quota, int(masked.sum(1).min())), dim=1).indices
            commit = torch.zeros_like(masked).scatter(1, top, True) & masked
        chosen = commit[masked]
        x[:, plen:][commit] = drawn[chosen] if drawn is not None else _draw(probs[chosen], temperature, generator)
        order[commit] = step
    return x, order


@pytest.mark.parametrize("settings", [
    dict(temperature=1.2, top_p=0.95, alg="entropy", alg_temp=0.0, steps=12),
    dict(temperature=0.0, top_p=None, alg="maskgit_plus", alg_temp=0.0, steps=6),
    dict(temperature=1.0, top_p=0.9, alg="origin", alg_temp=0.0, steps=5),
    dict(temperature=0.7, top_p=None, alg="topk_margin", alg_temp=0.5, steps=4),
])
def test_no_cache_and_one_block_is_todays_sampler_token_for_token(model, settings):
    want_x, want_order = _todays_sampler(model, PROMPTS, max_new_tokens=12, seed=5, **settings)
    for block_size in (None, 12):
        gen = dllm.generate(model, PROMPTS, max_new_tokens=12, block_size=block_size, cache="none", seed=5,
                            **settings)
        assert torch.equal(gen.sequences, want_x) and torch.equal(gen.order, want_order)


@pytest.mark.parametrize("window_end", [None, 24])
def test_cached_block_logits_equal_a_full_pass_on_the_state_they_were_cached_from(model, window_end):
    """Right after the refreshing pass nothing has changed, so the cache is exact: the window's
    logits must equal the full pass's, padding and Dream shift included."""
    x = torch.randint(0, 60, (3, 24), generator=torch.Generator().manual_seed(0))
    x[:, 14:] = MASK
    attn = torch.ones_like(x)
    attn[1, :4] = 0
    full = model(x, attn)
    kv = KVCache()
    refreshed = model.block_logits(x, attn, kv, 8, 14, reuse=False)
    cached = model.block_logits(x, attn, kv, 8, 14, reuse=True, window_end=window_end)
    assert torch.allclose(refreshed, full[:, 8:14], atol=1e-5)
    assert torch.allclose(cached, full[:, 8:14], atol=1e-5)


def test_cached_pass_reads_the_stored_keys_outside_its_window(model):
    """With one layer, keys depend on tokens only: after a token outside the window changes,
    the cached pass must still see the old token (it reads the store), the full pass the new."""
    model = _model("dream" if model.shift else "llada", layers=1)
    x = torch.randint(0, 60, (2, 16), generator=torch.Generator().manual_seed(1))
    kv = KVCache()
    model.block_logits(x, None, kv, 8, 12, reuse=False)
    changed = x.clone()
    changed[:, 2] = (x[:, 2] + 1) % 60
    cached = model.block_logits(changed, None, kv, 8, 12, reuse=True)
    assert torch.allclose(cached, model(x)[:, 8:12], atol=1e-5)
    assert not torch.allclose(cached, model(changed)[:, 8:12], atol=1e-3)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("layout", ["dream", "llada"])
def test_with_one_layer_the_cache_is_exact_so_generation_matches_the_uncached(layout, cache):
    """One layer: the stored keys/values of positions outside the block depend only on their
    tokens, which do not change while the block is denoised, so the cached sampler must
    produce the uncached block-wise sampler's tokens (float64: no near-ties flip)."""
    model = _model(layout, layers=1).double()
    kw = dict(max_new_tokens=16, steps=16, block_size=4, temperature=1.0, top_p=0.95, seed=2)
    plain = dllm.generate(model, PROMPTS, cache="none", **kw)
    cached = dllm.generate(model, PROMPTS, cache=cache, **kw)
    assert torch.equal(cached.sequences, plain.sequences) and torch.equal(cached.order, plain.order)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_refreshes_once_per_block_and_computes_less_in_between(model, cache):
    lengths = []
    model.model.embed_tokens.register_forward_hook(lambda _m, args, _out: lengths.append(args[0].shape[1]))
    gen = dllm.generate(model, PROMPTS, max_new_tokens=12, steps=12, block_size=4, cache=cache, seed=0)
    total = gen.sequences.shape[1]
    assert len(lengths) == gen.steps_run == 12
    assert lengths.count(total) == 3  # one full pass per block; the other steps see a window
    windows = set(lengths) - {total}
    if cache == "dual":
        assert windows == {4 + model.shift}  # the block (+ its predictor under the shift)
    else:  # the block and everything after it
        assert windows == {total - gen.prompt_len - start + model.shift for start in (0, 4, 8)}


def _block_steps(order: torch.Tensor, block_size: int) -> list[tuple[int, int]]:
    """(first, last) commit step of each block of each row."""
    return [(int(row[s:s + block_size].min()), int(row[s:s + block_size].max()))
            for row in order for s in range(0, order.shape[1], block_size)]


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("extra", [dict(), dict(alg="maskgit_plus", threshold=0.3), dict(alg="topk_margin", factor=2.0),
                                   dict(alg_temp=0.5, temperature=1.0)])
def test_blocks_are_decoded_left_to_right_one_at_a_time(model, cache, extra):
    with torch.no_grad():
        model.lm_head.weight *= 20.0  # confident predictions: parallel rules commit several at once
    gen = dllm.generate(model, PROMPTS, max_new_tokens=16, steps=8, block_size=4, cache=cache, seed=1, **extra)
    assert (gen.order >= 0).all() and (gen.order < gen.steps_run).all()
    assert not (gen.sequences[:, gen.prompt_len:] == MASK).any()
    spans = [_block_steps(gen.order[b:b + 1], 4) for b in range(2)]
    for row in spans:
        for (_, last_before), (first_after, _) in zip(row, row[1:]):
            assert last_before < first_after  # no token of a block committed before the previous block ended
    # Each step belongs to one block, so a step's commits never straddle a block boundary.
    for step in range(gen.steps_run):
        blocks = {int(j) // 4 for j in (gen.order == step).nonzero()[:, 1]}
        assert len(blocks) <= 1
    if not extra.get("threshold") and not extra.get("factor"):
        assert gen.steps_run == 8
        counts = torch.stack([(gen.order == s).sum(1) for s in range(8)], 1)
        assert (counts == 2).all()  # 4 blocks x 2 steps, 2 tokens each


@pytest.mark.parametrize("rule", [dict(threshold=0.5), dict(factor=2.0)])
def test_parallel_rules_commit_at_least_one_token_per_step_in_every_unfinished_row(model, rule):
    with torch.no_grad():
        model.lm_head.weight *= 30.0
    prompts = [[1, 2, 3], [9, 8], [4, 4, 4, 4], [11]]
    gen = dllm.generate(model, prompts, max_new_tokens=16, steps=16, block_size=8, cache="dual",
                        alg="maskgit_plus", seed=0, **rule)
    assert gen.steps_run < 16  # several tokens per step somewhere
    starts = [0] + [int(gen.order[:, :s].max()) + 1 for s in range(8, 16, 8)]
    for row in gen.order:
        for block, first in enumerate(starts):
            steps = sorted(set(row[block * 8:(block + 1) * 8].tolist()))
            # a row commits at every step of a block until its own block is done
            assert steps == list(range(first, first + len(steps)))


def test_factor_rule_commits_the_longest_run_that_clears_its_rising_bar():
    conf = torch.tensor([[0.99, 0.90, 0.70, 0.95, float("-inf")],
                         [0.10, 0.20, float("-inf"), 0.05, 0.15],
                         [0.99, 0.60, 0.97, 0.96, 0.96]])
    # factor 1: the i-th most confident needs >= 1 - 1/(i+1): 0.5, 0.667, 0.75, 0.8, 0.833
    assert factor_rule(conf, 1.0).tolist() == [
        [True, True, False, True, False],  # .99 .95 .90 pass, .70 < .8 stops the run
        [False, True, False, False, False],  # none passes: the most confident alone
        [True, False, True, True, True],  # .99 .97 .96 .96 pass, .60 < .833
    ]
    # factor 0.1: bars .95, .967, .975: row 0 stops at .95, row 2 at its third (.96)
    assert factor_rule(conf, 0.1).sum(1).tolist() == [1, 1, 2]


def test_threshold_and_factor_finish_in_fewer_steps_with_a_confident_model(model):
    with torch.no_grad():
        model.lm_head.weight *= 300.0
    for rule in (dict(threshold=0.9), dict(factor=1.0)):
        gen = dllm.generate(model, [[1, 2, 3]], max_new_tokens=16, steps=16, block_size=8, cache="dual",
                            alg="maskgit_plus", **rule)
        assert gen.steps_run < 16 and (gen.order >= 0).all()


def test_parallel_fraction_counts_answer_tokens_committed_with_others(model):
    one_by_one = dllm.generate(model, PROMPTS, max_new_tokens=12, steps=12, block_size=4, cache="dual", seed=0,
                               temperature=1.0)
    assert one_by_one.parallel_fraction.tolist() == [0.0, 0.0]
    pairs = dllm.generate(model, PROMPTS, max_new_tokens=12, steps=6, block_size=4, cache="dual", seed=0,
                          temperature=1.0)
    for b, completion in enumerate(pairs.completions):
        assert pairs.parallel_fraction[b] == (1.0 if completion else 0.0)
    with torch.no_grad():
        model.lm_head.weight *= 20.0
    mixed = dllm.generate(model, PROMPTS, max_new_tokens=16, steps=16, block_size=8, cache="dual", seed=0,
                          alg="maskgit_plus", threshold=0.5)
    for b, completion in enumerate(mixed.completions):
        row = mixed.order[b].tolist()
        answer = row[:len(completion)]
        expected = sum(row.count(s) > 1 for s in answer) / len(answer) if answer else 0.0
        assert mixed.parallel_fraction[b].item() == pytest.approx(expected)


def _eos_prone(model):
    """The model predicts EOS most of the time (a bias on the output head)."""
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(VOCAB))
        model.lm_head.bias[EOS] = 4.0
    return model


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_blocks_after_every_row_ended_are_eos_without_model_passes(model, cache):
    _eos_prone(model)
    gen = dllm.generate(model, PROMPTS, max_new_tokens=16, steps=16, block_size=4, cache=cache, seed=0,
                        temperature=1.0)
    rows = gen.sequences[:, gen.prompt_len:].tolist()
    cuts = [next(i for i, t in enumerate(row) if t in (EOS, PAD)) for row in rows]
    assert max(cuts) < 12, "the EOS-prone model should end every row before the last block"
    ended = (max(cuts) // 4 + 1) * 4  # end of the block in which the last row ended
    assert gen.steps_run == ended  # one pass per token until then, none after
    assert all(t == EOS for row in rows for t in row[ended:])
    assert (gen.order[:, ended:] == gen.steps_run - 1).all()
    assert gen.completions == [row[:cut] for row, cut in zip(rows, cuts)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_size=5), "must be > 0 and divide max_new_tokens"),
    (dict(block_size=0), "must be > 0 and divide max_new_tokens"),
    (dict(block_size=2, steps=3), "at least the number of blocks"),
    (dict(cache="full"), "unknown cache"),
    (dict(factor=0.0, alg="maskgit_plus"), "factor must be > 0"),
    (dict(factor=1.0, threshold=0.9, alg="maskgit_plus"), "not both"),
    (dict(factor=1.0), "need alg 'maskgit_plus' or 'topk_margin'"),
])
def test_bad_block_cache_and_rule_arguments_raise_one_clear_error(model, kwargs, message):
    args = dict(max_new_tokens=8, steps=8) | kwargs
    with pytest.raises(DLLMError, match=message):
        dllm.generate(model, [[1, 2]], **args)
