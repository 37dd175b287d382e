"""The rollout worker: a model replica that turns prompts into G completions each.

A plain object (tested without Ray) that satisfies the recipe's rollout interface on its
own (in-process runs); :mod:`rollout.pool` wraps several in Ray actors. It keeps the weight
version it serves and refuses pushes that are not newer, so a slow or re-ordered push can
never roll the policy back.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

import dllm
from dllm.arness import global_arness, local_arness
from rollout.config import SamplingConfig
from rollout.record import GenerationStats, Prompt, Rollout


def _as_tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(value)


class RolloutWorker:
    def __init__(self, model_path: str, *, threads: int = 1, device: str | None = None, worker_id: str = "rollout"):
        torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else None
        self.model = dllm.load_model(model_path, dtype=dtype, device=self.device)
        self.tokenizer = dllm.load_tokenizer(model_path)
        self.version = 0
        self.worker_id = worker_id

    def info(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "pid": os.getpid(), "node": socket.gethostname(),
                "device": self.device, "weight_version": self.version}

    def set_weights(self, version: int, holder: list, rewind: bool = False) -> int:
        """Load weights ``version`` (a state dict in checkpoint names, numpy or torch) unless
        it is not newer than what is served. ``holder`` wraps the object-store reference so
        that Ray hands it over unresolved and only a worker that needs it fetches it.
        ``rewind``: load it even when older or equal (the learner went back to a checkpoint, so
        the newer version served here belongs to steps that are trained again)."""
        if version <= self.version and not (rewind and version != self.version):
            return self.version
        state = holder[0]
        if not isinstance(state, dict):
            import ray
            state = ray.get(state)
        state = {k: _as_tensor(v).to(self.device) for k, v in state.items()}
        dtype = next(self.model.parameters()).dtype
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        self.model.load_checkpoint_state_dict(state, source=f"weights v{version}")
        self.version = version
        return self.version

    def push_weights(self, version: int, weights: Any, rewind: bool = False) -> int:
        """Serve ``weights`` (a state dict, or an object-store reference to one) as ``version``."""
        return self.set_weights(version, [weights], rewind)

    def _hints(self, prompts: list[Prompt], num_generations: int, length: int, seed: int) -> list[list[int]] | None:
        """The sampler's ``given`` rows: for a prompt with a hint, each token of the hint (its
        EOS included) kept with probability ``hint_ratio``, drawn per completion; ``None``
        when no prompt has a hint (plain decoding)."""
        if not any(p.hint for p in prompts):
            return None
        draw = torch.Generator().manual_seed(int(seed) + 1)
        rows = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt.hint, add_special_tokens=False) if prompt.hint else []
            ids = (ids + [self.model.eos_token_id] * (self.model.eos_token_id is not None))[:length]
            for _ in range(num_generations):
                keep = torch.rand(len(ids), generator=draw) < prompt.hint_ratio
                rows.append([t if k else -1 for t, k in zip(ids, keep.tolist())])
        return rows

    def generate(self, prompts: list[Prompt], *, num_generations: int, sampling: SamplingConfig, seed: int,
                 min_version: int = 0, holder: list | None = None) -> tuple[list[Rollout], GenerationStats]:
        """``num_generations`` completions of each prompt, prompt-major, and what they cost.

        When this worker serves an older version than ``min_version`` (it was restarted,
        or joined the pool late), it first loads the weights in ``holder``.
        """
        if self.version < min_version and holder is not None:
            self.set_weights(min_version, holder)
        start = time.perf_counter()
        prompt_ids = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt.text, add_special_tokens=False)
            prompt_ids.extend([ids] * num_generations)
        given = self._hints(prompts, num_generations, sampling.max_new_tokens, seed)
        gen = dllm.generate(self.model, prompt_ids, seed=seed, given=given, **sampling.model_dump())
        elapsed = time.perf_counter() - start
        eos = {self.model.eos_token_id, self.model.pad_token_id} - {None}
        out = []
        for i, completion in enumerate(gen.completions):
            prompt = prompts[i // num_generations]
            order = gen.order[i].tolist()
            tokens = gen.sequences[i, gen.prompt_len:].tolist()
            answer = max(len(completion), 1)  # AR-ness of the answer, not of the EOS padding after it
            ends_with_eos = len(completion) < len(tokens) and tokens[len(completion)] in eos
            out.append(Rollout(
                task_id=prompt.task_id, group=prompt.group, prompt_ids=prompt_ids[i], completion_ids=tokens,
                completion_len=len(completion) + int(ends_with_eos),
                text=self.tokenizer.decode(completion, skip_special_tokens=True), order=order,
                arness_local=local_arness(order[:answer], 1), arness_global=global_arness(order[:answer], 1),
                version=self.version, worker_id=self.worker_id, parallel_fraction=float(gen.parallel_fraction[i]),
                hinted=sum(t >= 0 for t in given[i]) if given else 0))
        tokens_total = len(gen.completions) * (gen.sequences.shape[1] - gen.prompt_len)
        return out, GenerationStats(wall_s=elapsed, busy_s=elapsed, tokens=tokens_total, actors=1)
