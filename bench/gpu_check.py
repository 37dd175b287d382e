"""GPU checks (run on a machine with a CUDA GPU; CI never has one): bf16 model and sampler,
sampler speed against the plain loop, cached/parallel decoding against today's sampler
(``bench/rollout_speed.py``'s settings), estimator agreement bf16 vs fp32, and a DeepSpeed
learner on NCCL (ZeRO-2 and ZeRO-3, bf16) doing real coupled-GRPO steps.

    python bench/gpu_check.py            # prints one JSON object per check, then a summary line

Last line: ``gpu_checks_passed: N/M``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import dllm  # noqa: E402
from bench._common import ordinary_token_ids  # noqa: E402
from bench.sampler import plain_generate  # noqa: E402
from tests.conftest import make_tiny_model_dir  # noqa: E402

RESULTS: list[dict] = []
CHECKS: list[tuple[str, object]] = []


def check(name):
    """Register a check; :func:`run_checks` runs them in order (importing runs nothing)."""
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn
    return wrap


def run_checks() -> None:
    for name, fn in CHECKS:
        start = time.perf_counter()
        try:
            info = fn() or {}
            RESULTS.append({"check": name, "ok": True, "s": round(time.perf_counter() - start, 2), **info})
        except Exception as exc:  # noqa: BLE001 - report every check, keep going
            RESULTS.append({"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                            "trace": traceback.format_exc()[-1500:]})
        print(json.dumps(RESULTS[-1]), flush=True)


def model_folder() -> Path:
    shipped = Path(__file__).resolve().parent.parent / "models" / "tiny-dllm"
    if (shipped / "config.json").is_file():
        return shipped
    folder = make_tiny_model_dir(Path(tempfile.mkdtemp()))
    base = dllm.load_model(folder)
    config = dict(base.raw_config, hidden_size=256, intermediate_size=768, num_hidden_layers=6)
    dllm.save_model(dllm.init_model(config, seed=0), folder)
    return folder


FOLDER: Path = Path()  # set by main: building a model folder is no import-time work


@check("bf16 sampler on cuda: complete, deterministic")
def _sampler():
    model = dllm.load_model(FOLDER, dtype=torch.bfloat16, device="cuda")
    prompts = [[5, 6, 7, 8]] * 8
    a = dllm.generate(model, prompts, max_new_tokens=32, steps=32, temperature=1.2, top_p=0.95, seed=0)
    b = dllm.generate(model, prompts, max_new_tokens=32, steps=32, temperature=1.2, top_p=0.95, seed=0)
    assert (a.order >= 0).all() and torch.equal(a.sequences, b.sequences)
    return {"arness_local": dllm.local_arness(a.order.cpu())}


@check("sampler speedup vs plain loop on cuda (batch 64)")
def _speed():
    model = dllm.load_model(FOLDER, dtype=torch.bfloat16, device="cuda")
    gen = torch.Generator().manual_seed(0)
    prompts = [ordinary_token_ids(model, 16, gen) for _ in range(64)]
    torch.cuda.synchronize()
    start = time.perf_counter()
    dllm.generate(model, prompts, max_new_tokens=64, steps=64, temperature=1.2, seed=0)
    torch.cuda.synchronize()
    ours = time.perf_counter() - start

    class OnCuda(torch.nn.Module):  # the plain loop builds CPU tensors; move them in forward
        def __init__(self, m):
            super().__init__()
            self.m, self.mask_token_id = m, m.mask_token_id

        def forward(self, x, attn=None):
            return self.m(x.cuda()).float().cpu()

    start = time.perf_counter()
    for i, p in enumerate(prompts[:8]):
        plain_generate(OnCuda(model), p, 64, 64, 1.2, seed=i)
    plain = (time.perf_counter() - start) * 8
    return {"tokens_per_s": 64 * 64 / ours, "speedup": plain / ours}


@check("cached/parallel sampler vs today's on cuda (bench/rollout_speed.py settings, batch 32, 256 tokens)")
def _cached_speed():
    from bench.rollout_speed import SETTINGS, SPEED_SAMPLING, TODAY, options_for
    config = dllm.dream_config(32768, 32767, 32766, 32765, hidden_size=1024, num_layers=8, num_heads=16,
                               num_kv_heads=4, intermediate_size=2816, max_position_embeddings=1024)
    model = dllm.init_model(config, seed=0).to(device="cuda", dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(0)
    prompts = [ordinary_token_ids(model, int(n), gen) for n in torch.randint(64, 128, (32,), generator=gen)]
    rates = {}
    for name in SETTINGS:
        dllm.generate(model, prompts[:2], **options_for(name, 32, SPEED_SAMPLING), seed=0)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = dllm.generate(model, prompts, **options_for(name, 256, SPEED_SAMPLING), seed=0)
        torch.cuda.synchronize()
        rates[name] = 32 * 256 / (time.perf_counter() - start)
        assert (out.order >= 0).all()
    return {"tokens_per_s": {k: round(v, 1) for k, v in rates.items()},
            "speedup": {k: round(v / rates[TODAY], 2) for k, v in rates.items()}}


@check("coupled estimator: bf16 agrees with fp32 on cuda (same seed, same masks)")
def _estimator():
    fp32 = dllm.load_model(FOLDER, device="cuda")
    bf16 = dllm.load_model(FOLDER, dtype=torch.bfloat16, device="cuda")
    seqs = torch.tensor([ordinary_token_ids(fp32, 40, torch.Generator().manual_seed(b)) for b in range(4)]).cuda()
    ref = dllm.coupled_logps(fp32, seqs, 16, seed=3)
    got = dllm.coupled_logps(bf16, seqs, 16, seed=3).float()
    rel = ((ref - got).abs().mean() / ref.abs().mean()).item()
    assert rel < 0.05, rel
    return {"mean_rel_diff": rel, "fp32_mean": ref.mean().item(), "bf16_mean": got.mean().item()}


def _learner(stage: int):
    from learner.batch import RolloutBatch
    from learner.config import GRPOConfig, LearnerConfig
    from learner.worker import LearnerWorker, free_port
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    worker = LearnerWorker(str(FOLDER), GRPOConfig(num_iterations=2, num_generations=2),
                           LearnerConfig(zero_stage=stage, lr=1e-4), total_steps=4, rank=0, world_size=1)
    seqs = torch.randint(0, 100, (4, 24), generator=torch.Generator().manual_seed(0))
    batch = RolloutBatch(sequences=seqs, attention_mask=torch.ones_like(seqs), prompt_len=8,
                         completion_mask=torch.ones(4, 16), advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]))
    metrics = [worker.train_step(batch) for _ in range(2)]
    weights = worker.publish_weights(2)
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    backend = torch.distributed.get_backend()
    worker.shutdown()
    return {"backend": backend, "bf16": worker.bf16, "loss": metrics[-1]["loss"], "kl": metrics[-1].get("kl"),
            "weights": len(weights), "first_weight_dtype": str(next(iter(weights.values())).dtype)}


@check("DeepSpeed learner, NCCL, ZeRO-2, bf16")
def _zero2():
    return _learner(2)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    FOLDER = model_folder()
    run_checks()
    ok = sum(r["ok"] for r in RESULTS)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"gpu_checks_passed: {ok}/{len(RESULTS)}")
