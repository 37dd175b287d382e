"""The configured log-prob estimator, evaluated on a slice of a global batch.

``dllm.estimators`` draws its masks for the batch it is given. A data-parallel rank (or one
gradient-accumulation micro-batch) holds only some rows of the global batch, and drawing
masks for those rows alone would give it different masks than a single worker gets for the
same rows. So the passes are drawn here for the *global* shape ``[global_size, N]`` with the
step's seed, and each caller keeps its own rows: the result equals the rows of
``dllm.estimate_logps`` on the whole batch (tested), whatever the sharding.
"""

from __future__ import annotations

import torch

from dllm.estimators import Pass, coupled_passes, decoupled_passes, full_pass, pass_logps
from dllm.estimators import combine as _combine
from learner.batch import RolloutBatch
from learner.grpo import GRPOConfig


def _d1_passes(global_size: int, n: int, prompt_len: int, *, p_mask_prompt: float, seed: int, device,
               num_passes: int = 1) -> list[Pass]:
    """d1's passes exactly as ``dllm.d1_logps`` draws them (completion fully masked, prompt
    masked at ``p_mask_prompt``); the attention mask is applied per rank afterwards."""
    gen = torch.Generator(device=device).manual_seed(int(seed))
    passes = []
    for _ in range(num_passes):
        if p_mask_prompt > 0:
            prompt = torch.rand((global_size, prompt_len), generator=gen, device=device) < p_mask_prompt
        else:
            prompt = torch.zeros((global_size, prompt_len), dtype=torch.bool, device=device)
        passes.append(Pass(torch.ones((global_size, n), dtype=torch.bool, device=device), prompt,
                           torch.ones(global_size, device=device)))
    return passes


def global_passes(config: GRPOConfig, global_size: int, n: int, prompt_len: int, seed: int, device) -> list[Pass]:
    """The estimator's masked passes for the whole global batch (full pass not included)."""
    if config.estimator == "d1":
        return _d1_passes(global_size, n, prompt_len, p_mask_prompt=config.d1_p_mask_prompt, seed=seed, device=device,
                          num_passes=config.d1_num_passes)
    build = coupled_passes if config.estimator == "coupled" else decoupled_passes
    return build(global_size, n, prompt_len, num_pairs=config.num_pairs, t_range=tuple(config.t_range),
                 p_mask_prompt=config.p_mask_prompt, seed=seed, device=device)


def _rows_of(p: Pass, start: int, stop: int, prompt_attn: torch.Tensor) -> Pass:
    return Pass(p.completion_masked[start:stop], p.prompt_masked[start:stop] & prompt_attn.bool(),
                p.weight[start:stop])


def batch_logps(model, batch: RolloutBatch, config: GRPOConfig, seed: int) -> torch.Tensor:
    """Estimated ``log p(o_k | c)`` ``[b, N]`` for the batch's rows, masks drawn for the global batch.

    ``model`` is anything with ``__call__(input_ids, attention_mask) -> logits`` and
    ``mask_token_id`` (a ``DiffusionLM`` or a DeepSpeed engine wrapping one). Gradients flow
    when called outside ``torch.no_grad``.
    """
    device = batch.sequences.device
    n, plen = batch.completion_len, batch.prompt_len
    global_size = batch.global_size or batch.size
    start, stop = batch.row_offset, batch.row_offset + batch.size
    prompt_attn = batch.attention_mask[:, :plen]
    passes = [_rows_of(p, start, stop, prompt_attn)
              for p in global_passes(config, global_size, n, plen, seed, device)]
    if config.estimator == "d1":
        reads = pass_logps(model, batch.sequences, plen, passes, batch.attention_mask, config.logp_max_batch)
        return reads.mean(0)
    with_full = config.full_pass_included
    all_passes = ([full_pass(batch.size, n, plen, device)] if with_full else []) + passes
    reads = pass_logps(model, batch.sequences, plen, all_passes, batch.attention_mask, config.logp_max_batch)
    return _combine(reads, passes, config.num_pairs, with_full)
