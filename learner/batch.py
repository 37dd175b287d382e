"""The batch the orchestrator sends the learner: scored rollouts in ``dllm.generate``'s layout.

``sequences`` are left-padded prompts followed by ``N`` completion positions; everything the
loss reads lives at positions ``prompt_len:``. Several rollout actors' outputs (different
prompt lengths, different ``N``) are merged with :func:`collate`: prompts are padded on the
left, completions on the right, and the padding is hidden by ``attention_mask`` and
``completion_mask``. Rotary position embeddings are relative, so left padding that no token
attends to leaves every log-prob unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from learner.errors import LearnerError


@dataclass
class RolloutBatch:
    """Scored rollouts for one learner step.

    ``completion_mask[b, j]`` is 1 for completion tokens up to and including the first EOS and
    0 after (see :func:`completion_mask_from_eos`); ``advantages[b]`` is the completion's
    group advantage (:func:`learner.grpo.group_advantages`); ``step`` is the recipe's step that
    produced it; ``versions[b]`` is the weight version that generated row ``b`` (None: the
    learner's current weights), so the learner can take the old log-probs from the policy that
    really sampled it. ``row_offset`` / ``global_size`` are set when a global batch is
    split across data-parallel ranks: the estimator draws its masks for all ``global_size``
    rows and each rank reads its own rows, so a shard sees exactly the masks a single worker
    would.
    """

    sequences: torch.Tensor       # [B, P+N] int64
    attention_mask: torch.Tensor  # [B, P+N] 1 = real token
    prompt_len: int               # P
    completion_mask: torch.Tensor  # [B, N]
    advantages: torch.Tensor      # [B]
    step: int = 0
    versions: torch.Tensor | None = None  # [B] int64
    row_offset: int = 0
    global_size: int | None = None

    def __post_init__(self) -> None:
        seq = self.sequences
        if not isinstance(seq, torch.Tensor) or seq.dim() != 2:
            raise LearnerError("RolloutBatch.sequences must be a [B, P+N] integer tensor")
        b, length = seq.shape
        if not 0 < int(self.prompt_len) < length:
            raise LearnerError(f"RolloutBatch.prompt_len must be in (0, {length}) for sequences of length {length} "
                               f"(got {self.prompt_len})")
        n = length - int(self.prompt_len)
        checks = (("attention_mask", self.attention_mask, (b, length)),
                  ("completion_mask", self.completion_mask, (b, n)),
                  ("advantages", self.advantages, (b,)))
        if self.versions is not None:
            checks += (("versions", self.versions, (b,)),)
        for name, tensor, shape in checks:
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise LearnerError(f"RolloutBatch.{name} must have shape {shape} to match sequences {tuple(seq.shape)} "
                                   f"and prompt_len {self.prompt_len} (got {got})")
        if not torch.isfinite(self.advantages.float()).all():
            raise LearnerError("RolloutBatch.advantages contain NaN or inf; check the rewards")
        self.prompt_len = int(self.prompt_len)

    @property
    def size(self) -> int:
        return int(self.sequences.shape[0])

    @property
    def completion_len(self) -> int:
        return int(self.sequences.shape[1]) - self.prompt_len

    @property
    def num_completion_tokens(self) -> int:
        return int(self.completion_mask.sum())

    def to(self, device) -> RolloutBatch:
        return replace(self, sequences=self.sequences.to(device), attention_mask=self.attention_mask.to(device),
                       completion_mask=self.completion_mask.to(device), advantages=self.advantages.to(device),
                       versions=None if self.versions is None else self.versions.to(device))

    def rows(self, start: int, stop: int) -> RolloutBatch:
        """Rows ``start:stop`` as a batch that remembers where it sits in the global batch."""
        return replace(self, sequences=self.sequences[start:stop], attention_mask=self.attention_mask[start:stop],
                       completion_mask=self.completion_mask[start:stop], advantages=self.advantages[start:stop],
                       versions=None if self.versions is None else self.versions[start:stop],
                       row_offset=self.row_offset + start, global_size=self.global_size or self.size)

    def pad_rows(self, multiple: int) -> RolloutBatch:
        """Append copies of the last row with an empty completion mask and zero advantage until
        the row count is a multiple of ``multiple`` (they add nothing to the loss or gradient;
        they let every rank run the same number of micro-batches)."""
        extra = (-self.size) % multiple
        if extra == 0:
            return self

        def rep(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t[-1:].expand(extra, *t.shape[1:])], 0)

        return replace(self, sequences=rep(self.sequences), attention_mask=rep(self.attention_mask),
                       completion_mask=torch.cat([self.completion_mask,
                                                  torch.zeros_like(self.completion_mask[:1]).expand(extra, -1)], 0),
                       advantages=torch.cat([self.advantages, torch.zeros_like(self.advantages[:1]).expand(extra)]),
                       versions=None if self.versions is None else rep(self.versions), global_size=None)

    def shard(self, world_size: int, multiple: int = 1) -> list[RolloutBatch]:
        """Pad to a multiple of ``world_size * multiple`` rows and split into equal contiguous shards."""
        padded = self.pad_rows(world_size * multiple)
        per = padded.size // world_size
        return [padded.rows(r * per, (r + 1) * per) for r in range(world_size)]


def completion_mask_from_eos(sequences: torch.Tensor, prompt_len: int, eos_token_id: int | None) -> torch.Tensor:
    """1 for completion tokens up to and including the first EOS, 0 after (all 1 without EOS)."""
    completion = sequences[:, prompt_len:]
    if eos_token_id is None:
        return torch.ones_like(completion, dtype=torch.float32)
    is_eos = completion == int(eos_token_id)
    seen_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # an EOS strictly earlier
    return (~seen_before).to(torch.float32)


def from_generation(generation, advantages: torch.Tensor, eos_token_id: int | None, step: int = 0) -> RolloutBatch:
    """A batch from a ``dllm.Generation`` and the completions' advantages."""
    seqs = generation.sequences
    return RolloutBatch(sequences=seqs, attention_mask=generation.attention_mask, prompt_len=generation.prompt_len,
                        completion_mask=completion_mask_from_eos(seqs, generation.prompt_len, eos_token_id),
                        advantages=torch.as_tensor(advantages, dtype=torch.float32), step=step)


def collate(rollouts: list[RolloutBatch], pad_token_id: int = 0) -> RolloutBatch:
    """Merge batches from several rollout actors into one.

    Prompts are left-padded to the longest prompt and completions right-padded to the longest
    completion; padded positions get ``attention_mask`` 0 and ``completion_mask`` 0. The
    merged ``step`` is the smallest input step (the oldest policy that contributed).
    """
    if not rollouts:
        raise LearnerError("collate: no rollout batches to merge")
    p_max = max(r.prompt_len for r in rollouts)
    n_max = max(r.completion_len for r in rollouts)
    seqs, attn, cmask, adv, versions = [], [], [], [], []
    for r in rollouts:
        left, right = p_max - r.prompt_len, n_max - r.completion_len
        b = r.size
        seqs.append(torch.cat([torch.full((b, left), pad_token_id, dtype=r.sequences.dtype), r.sequences.cpu(),
                               torch.full((b, right), pad_token_id, dtype=r.sequences.dtype)], 1))
        am = r.attention_mask.cpu()
        attn.append(torch.cat([torch.zeros((b, left), dtype=am.dtype), am, torch.zeros((b, right), dtype=am.dtype)], 1))
        cm = r.completion_mask.cpu()
        cmask.append(torch.cat([cm, torch.zeros((b, right), dtype=cm.dtype)], 1))
        adv.append(r.advantages.cpu().float())
        versions.append(None if r.versions is None else r.versions.cpu())
    known = all(v is not None for v in versions)
    return RolloutBatch(sequences=torch.cat(seqs), attention_mask=torch.cat(attn), prompt_len=p_max,
                        completion_mask=torch.cat(cmask).float(), advantages=torch.cat(adv),
                        step=min(r.step for r in rollouts), versions=torch.cat(versions) if known else None)


def from_token_rows(prompts: list[list[int]], completions: list[list[int]], advantages: torch.Tensor, *,
                    pad_token_id: int, eos_token_id: int | None, step: int = 0,
                    versions: list[int] | None = None) -> RolloutBatch:
    """A batch from each rollout's prompt ids and its ``N`` generated ids (EOS padding
    included), with one advantage (and the generating weight version) per rollout: what the
    recipe builds from its rollouts."""
    versions = versions if versions is not None else [None] * len(prompts)
    if not (len(prompts) == len(completions) == len(advantages) == len(versions)):
        raise LearnerError(f"from_token_rows: {len(prompts)} prompts, {len(completions)} completions, "
                           f"{len(advantages)} advantages and {len(versions)} versions must match")
    rows = []
    for prompt, completion, advantage, version in zip(prompts, completions,
                                                       torch.as_tensor(advantages, dtype=torch.float32), versions):
        seq = torch.tensor([list(prompt) + list(completion)], dtype=torch.long)
        rows.append(RolloutBatch(sequences=seq, attention_mask=torch.ones_like(seq), prompt_len=len(prompt),
                                 completion_mask=completion_mask_from_eos(seq, len(prompt), eos_token_id),
                                 advantages=advantage.view(1), step=step,
                                 versions=None if version is None else torch.tensor([int(version)])))
    return collate(rows, pad_token_id=pad_token_id)
