"""The DeepSpeed learner group on real Ray actors (gloo, CPU): data parallelism, ZeRO-3
consolidation, exact checkpoint resume, HF export."""

from __future__ import annotations

import json

import pytest
import torch

import dllm
from learner import GRPOConfig, LearnerConfig, LearnerError, RolloutBatch

VOCAB, MASK, EOS, PAD = 64, 63, 62, 61  # as tests/conftest.py's tiny models

pytestmark = pytest.mark.slow

# Resume test: optimiser steps 1..6 (μ=2); the reference re-syncs at 3 and 6, so the saved
# reference (synced at 3) differs from both the start model and the policy at the save.
GRPO = GRPOConfig(beta=0.05, num_iterations=2, ref_sync_every=3)
LEARNER = LearnerConfig(lr=1e-3, warmup_steps=1, zero_stage=2)


def _group(model_dir, workers: int = 1, **learner):
    from learner.group import LearnerGroup

    return LearnerGroup(model_dir, GRPO, LEARNER.model_copy(update={"workers": workers, **learner}),
                        total_steps=10, seed=7)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models

    path = tmp_path_factory.mktemp("tiny") / "model"
    model = dllm.init_model(dllm.dream_config(VOCAB, MASK, EOS, PAD, hidden_size=32, num_layers=2, num_heads=4,
                                              num_kv_heads=2, intermediate_size=64), seed=0)
    dllm.save_model(model, path)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def single_update(ray_cluster, model_dir):
    """One ZeRO-2 worker's update on batch 1: what every data-parallel layout must reproduce."""
    single = _group(model_dir, 1)
    try:
        metrics = single.train_step(_batch(1))
        return metrics, single.get_weights(1)
    finally:
        single.shutdown()


def _batch(seed: int, rows: int = 4) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(0, 60, (rows, 16), generator=g)
    attn = torch.ones_like(seqs)
    attn[0, :2] = 0  # one left-padded prompt
    cmask = torch.ones(rows, 10)
    cmask[1, 7:] = 0  # one completion ended early
    adv = torch.randn(rows, generator=g)
    return RolloutBatch(seqs, attn, 6, cmask, adv, step=seed)


def _assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k, x in a.items():
        y = b[k]
        assert x.shape == y.shape, k
        assert torch.allclose(x.float(), y.float(), atol=atol, rtol=0), (k, (x - y).abs().max())


def _max_change(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_bad_group_arguments_raise_learner_error(model_dir, tmp_path):
    from learner.group import LearnerGroup

    with pytest.raises(LearnerError, match="config.json"):
        LearnerGroup(tmp_path / "nowhere")


def test_two_zero2_workers_update_like_one_and_resume_exactly(ray_cluster, model_dir, single_update, tmp_path):
    start = dllm.load_model(model_dir).checkpoint_state_dict()
    b1, b2, b3 = _batch(1), _batch(2), _batch(3)
    m_single, w_single = single_update

    pair = _group(model_dir, 2)
    assert len({info["pid"] for info in pair.workers_info}) == 2
    m_pair = pair.train_step(b1)
    w_pair = ray_cluster.get(pair.publish_weights(1))
    assert _max_change(w_pair, start) > 1e-4  # the update is real, far above the tolerance below
    _assert_same_weights(w_pair, w_single, atol=2e-6)
    for key in ("loss", "kl", "clip_frac", "grad_norm", "lr", "tokens"):
        assert m_pair[key] == pytest.approx(m_single[key], rel=1e-4, abs=1e-7), key
    assert m_pair["tokens"] == 4 * 10 - 3 and m_pair["kl"] > 0 and m_pair["optimizer_steps"] == 2

    # Checkpoint after two steps; the third step of the same run is the reference.
    pair.train_step(b2)
    pair.save(tmp_path / "ck", extra={"data_cursor": 8, "prompts_seen": [1, 2]})
    m3 = pair.train_step(b3)
    w3 = pair.get_weights(3)
    pair.shutdown()
    saved = json.loads((tmp_path / "ck" / "learner_state.json").read_text())
    assert saved["step"] == 2 and saved["optimizer_steps"] == 4

    resumed = _group(model_dir, 2)
    assert resumed.load(tmp_path / "ck") == {"data_cursor": 8, "prompts_seen": [1, 2]}
    assert resumed.counters()["step"] == 2
    m3r = resumed.train_step(b3)
    w3r = resumed.get_weights(3)
    resumed.shutdown()
    _assert_same_weights(w3r, w3, atol=1e-6)
    for key in ("loss", "kl", "grad_norm", "lr", "ratio_mean"):
        assert m3r[key] == pytest.approx(m3[key], rel=1e-5, abs=1e-8), key
    assert _max_change(w3, w_pair) > 1e-4


def test_zero3_gathers_full_weights_and_exports_hf(ray_cluster, model_dir, single_update, tmp_path):
    start = dllm.load_model(model_dir).checkpoint_state_dict()
    group = _group(model_dir, 2, zero_stage=3, gradient_accumulation_steps=2, placement="SPREAD")
    try:
        w0 = group.get_weights(0)
        _assert_same_weights(w0, start, atol=0)  # full, unpartitioned tensors in checkpoint names
        metrics = group.train_step(_batch(1))
        w1 = group.get_weights(1)
        assert _max_change(w1, start) > 1e-4 and metrics["kl"] > 0
        group.export_hf(tmp_path / "hf")
    finally:
        group.shutdown()
    exported = dllm.load_model(tmp_path / "hf")
    _assert_same_weights(exported.checkpoint_state_dict(), w1, atol=0)
    assert dllm.load_tokenizer(tmp_path / "hf").convert_ids_to_tokens(5) == "t5"
    # ZeRO-3 with 2 micro-batches per rank makes the same update as ZeRO-2 on one rank.
    _assert_same_weights(w1, single_update[1], atol=2e-6)
