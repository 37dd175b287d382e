import pytest
import torch

import dllm
from dllm.errors import DLLMError
from dllm.sampler import tokens_per_step
from tests.conftest import MASK

PROMPTS = [[1, 2, 3, 4], [5, 6]]


@pytest.mark.parametrize("alg", dllm.ALGORITHMS)
def test_every_position_committed_once_within_steps(tiny_dream, alg):
    gen = dllm.generate(tiny_dream, PROMPTS, max_new_tokens=12, steps=5, temperature=1.0, top_p=0.95,
                        alg=alg, seed=3)
    assert gen.order.shape == (2, 12)
    assert (gen.order >= 0).all() and (gen.order < 5).all()
    counts = torch.stack([(gen.order == s).sum(1) for s in range(5)], 1)
    assert torch.equal(counts, torch.tensor([tokens_per_step(12, 5)] * 2))
    assert not (gen.sequences[:, gen.prompt_len:] == MASK).any()
    assert gen.steps_run == 5


def test_prompts_are_left_padded_and_kept(tiny_dream):
    gen = dllm.generate(tiny_dream, PROMPTS, max_new_tokens=4, steps=2, seed=0)
    assert gen.prompt_len == 4
    assert gen.sequences[0, :4].tolist() == PROMPTS[0]
    assert gen.sequences[1, 2:4].tolist() == PROMPTS[1]
    assert gen.attention_mask[1, :2].tolist() == [0, 0]


def test_deterministic_for_a_seed_and_varies_across_seeds(tiny_dream):
    kw = dict(max_new_tokens=10, steps=5, temperature=1.2, top_p=0.95, alg_temp=0.5)
    a = dllm.generate(tiny_dream, PROMPTS, seed=7, **kw)
    b = dllm.generate(tiny_dream, PROMPTS, seed=7, **kw)
    c = dllm.generate(tiny_dream, PROMPTS, seed=8, **kw)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.order, b.order)
    assert not (torch.equal(a.sequences, c.sequences) and torch.equal(a.order, c.order))


def test_single_step_commits_everything_and_greedy_matches_argmax(tiny_dream):
    gen = dllm.generate(tiny_dream, [[1, 2, 3]], max_new_tokens=6, steps=1, temperature=0.0)
    x = torch.tensor([[1, 2, 3] + [MASK] * 6])
    logits = tiny_dream(x)[0, 3:]
    logits[:, MASK] = float("-inf")
    assert gen.sequences[0, 3:].tolist() == logits.argmax(-1).tolist()
    assert (gen.order == 0).all()


def test_one_token_per_step_follows_confidence(tiny_dream):
    """Replays greedy maskgit_plus decoding: before each step, the position the sampler
    commits is the masked one with the highest top-1 probability, filled with its argmax."""
    prompt, n = [1, 2, 3], 6
    gen = dllm.generate(tiny_dream, [prompt], max_new_tokens=n, steps=n, alg="maskgit_plus")
    order, final = gen.order[0], gen.sequences[0, gen.prompt_len:]
    for step in range(n):
        state = torch.where(order < step, final, torch.full_like(final, MASK))
        with torch.no_grad():
            probs = tiny_dream(torch.tensor([prompt + state.tolist()]))[0, len(prompt):].softmax(-1)
        probs[:, MASK] = 0
        confidence = probs.max(-1).values.masked_fill(state != MASK, -1.0)
        chosen = int(confidence.argmax())
        assert int(order[chosen]) == step
        assert int(final[chosen]) == int(probs[chosen].argmax())


def test_threshold_decoding_finishes_in_fewer_steps(tiny_dream):
    with torch.no_grad():  # sharpen the model so that many positions cross the threshold at once
        tiny_dream.lm_head.weight *= 300.0
    gen = dllm.generate(tiny_dream, [[1, 2, 3]], max_new_tokens=8, steps=8, alg="maskgit_plus", threshold=0.5)
    assert (gen.order >= 0).all()
    assert gen.steps_run < 8


def test_completions_stop_at_eos(tiny_dream):
    """The model is made to write EOS at completion position 3 (a hook on the output head);
    the completion is the tokens before it, whatever follows."""
    prompt, eos_at = [1, 2], 3
    boost = torch.zeros(1, len(prompt) + 6, tiny_dream.lm_head.out_features)
    boost[0, len(prompt) + eos_at - 1, tiny_dream.eos_token_id] = 1e4  # Dream layout: output i-1 predicts token i
    handle = tiny_dream.lm_head.register_forward_hook(lambda module, args, out: out + boost)
    try:
        gen = dllm.generate(tiny_dream, [prompt], max_new_tokens=6, steps=3, seed=0, temperature=1.0)
    finally:
        handle.remove()
    row = gen.sequences[0, gen.prompt_len:].tolist()
    assert row[eos_at] == tiny_dream.eos_token_id
    stops = [i for i, t in enumerate(row) if t in (tiny_dream.eos_token_id, tiny_dream.pad_token_id)]
    assert gen.completions[0] == row[: stops[0]] and len(gen.completions[0]) <= eos_at


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps must be > 0"),
    (dict(steps=9), "cannot exceed"),
    (dict(alg="beam"), "unknown alg"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_p=1.5), "top_p"),
    (dict(threshold=0.9, alg="entropy"), "threshold and factor decoding need"),
])
def test_bad_arguments_raise_one_clear_error(tiny_dream, kwargs, message):
    args = dict(max_new_tokens=8, steps=4) | kwargs
    with pytest.raises(DLLMError, match=message):
        dllm.generate(tiny_dream, [[1, 2]], **args)


def test_empty_prompt_rejected(tiny_dream):
    with pytest.raises(DLLMError, match="at least one token"):
        dllm.generate(tiny_dream, [[]], max_new_tokens=4, steps=2)


@pytest.mark.parametrize("scale", [0.1, 1.0, 8.0])
def test_fast_top_p_keeps_exactly_what_a_full_sort_keeps(scale):
    """Flat rows (scale 0.1) need more than the probe's tokens and take the sorted fallback;
    peaked rows are cut within it. Both must keep the same set as sorting every row."""
    from dllm.sampler import _filter_top_p, _sorted_top_p

    logits = torch.randn(300, 1024, generator=torch.Generator().manual_seed(0)) * scale
    logits[:5, 7] = float("-inf")  # the [MASK] column
    for top_p in (0.5, 0.9, 0.95):
        fast = torch.isfinite(_filter_top_p(logits, top_p, probe=16))
        exact = torch.isfinite(_sorted_top_p(logits, top_p))
        assert torch.equal(fast, exact)


def test_top_p_sampling_only_draws_kept_tokens(tiny_dream):
    """With a tiny top_p only the most likely token of each position may come out."""
    with torch.no_grad():
        tiny_dream.lm_head.weight *= 50.0
    gen = dllm.generate(tiny_dream, [[1, 2, 3]] * 4, max_new_tokens=6, steps=1, temperature=1.0, top_p=0.01,
                        seed=0)
    greedy = dllm.generate(tiny_dream, [[1, 2, 3]], max_new_tokens=6, steps=1, temperature=0.0)
    assert all(row == greedy.sequences[0, 3:].tolist() for row in gen.sequences[:, 3:].tolist())


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_given_tokens_stay_put_and_the_rest_is_decoded(tiny_dream, cache):
    given = [[7, -1, 9, -1, -1, -1, 11, -1], []]  # second row: nothing given
    gen = dllm.generate(tiny_dream, PROMPTS, max_new_tokens=8, steps=4, temperature=1.0, seed=1,
                        block_size=4, cache=cache, given=given)
    completion = gen.sequences[:, gen.prompt_len:]
    assert completion[0, [0, 2, 6]].tolist() == [7, 9, 11]
    assert gen.order[0, [0, 2, 6]].tolist() == [0, 0, 0]
    assert not (completion == MASK).any() and (gen.order >= 0).all()


def test_fully_given_rows_come_back_as_given(tiny_dream):
    rows = [[5, 6, 7, 8], [9, 10, 11, 12]]
    gen = dllm.generate(tiny_dream, PROMPTS, max_new_tokens=4, steps=2, temperature=1.0, seed=0, given=rows)
    assert gen.sequences[:, gen.prompt_len:].tolist() == rows
    assert gen.steps_run == 0  # nothing left to decode: no model pass


@pytest.mark.parametrize("given, message", [([[1]], "given has 1 rows for 2 prompts"),
                                             ([[1] * 9, []], "longer than max_new_tokens")])
def test_bad_given_is_refused(tiny_dream, given, message):
    with pytest.raises(DLLMError, match=message):
        dllm.generate(tiny_dream, PROMPTS, max_new_tokens=8, steps=4, given=given)
