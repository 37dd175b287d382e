"""`cgrpo pretrain`: train the project's tiny dLLM (tokenizer + model) from scratch on 2 CPU cores.

The recipe, top to bottom (what produced ``models/tiny-dllm``):

1. **Tokenizer**: a byte-level BPE (``tokenizers``) trained on the Python standard library
   shipped with the interpreter plus the built-in train problems, with the special tokens
   ``<|endoftext|>`` (EOS), ``<|pad|>`` and ``<|mask|>``; saved as an HF fast tokenizer.
2. **Stage 1, masked-diffusion pre-training**: the ELBO loss (:func:`dllm.elbo_loss`) over
   whole sequences, on solved train problems (prompt + canonical solution + EOS padding) and
   on chunks of standard-library source.
3. **Stage 2, prompt -> solution fine-tuning** (SFT for dLLMs): the prompt is never masked;
   the completion (solution followed by EOS up to ``max_new_tokens``) is noised and
   predicted, so the model learns to end a body by filling the rest with EOS.

Batches use the layout the sampler uses at RL time (:func:`dllm.generate`): prompts
left-padded to the longest prompt of the batch with an ``attention_mask``, followed by
exactly ``max_new_tokens`` completion positions. Everything is seeded: the same
``--seed``/``--steps`` on the same machine gives the same weights.

Held-out and validation problems are never trained on, not even by the tokenizer; the
periodic evaluation reads the *validation* split (carved from train, see ``tasks.builtin``),
on which checkpoints are chosen: completion ELBO loss, the copy probe (probability of the
docstring's constants with the rest of the body visible, tasks/slots.py), and the
exact-match rate of greedy generations against the reference body (string comparison; no
model output is ever executed here).
"""

from __future__ import annotations

import json
import random
import sysconfig
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import dllm
from dllm.schedule import decay_param_groups, warmup_cosine
from modelprep.errors import ModelPrepError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
MASK_TOKEN = "<|mask|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, MASK_TOKEN]


# ---------------------------------------------------------------- corpus and tokenizer

def stdlib_files(limit_bytes: int | None = None, root: str | Path | None = None) -> list[Path]:
    """Top-level ``*.py`` modules of the running interpreter's standard library (or of
    ``root``), sorted by name: a fixed, offline corpus of real Python. ``limit_bytes`` caps
    the total size (files that would overflow it are left out)."""
    root = Path(root) if root else Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise ModelPrepError(f"no *.py files under {root}: pass --source-dir with a folder of Python source")
    if limit_bytes is None:
        return files
    chosen, total = [], 0
    for path in files:
        size = path.stat().st_size
        if total + size > limit_bytes:
            continue
        chosen.append(path)
        total += size
    return chosen


def read_source(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def problem_text(task) -> str:
    """A solved problem as one document: prompt followed by its canonical body."""
    return task.prompt + (task.canonical_solution or "")


def train_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts`` (deterministic for the same texts in the same order).

    Special tokens take ids 0, 1, 2 (EOS, pad, mask); there is no BOS and no post-processor,
    so ``encode(prompt)`` gives exactly the prompt's tokens, as the sampler expects.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ModelPrepError(f"--vocab-size {vocab_size} is too small: a byte-level BPE needs more than 259 ids")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        mask_token=MASK_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(eos, pad, mask) ids of a tokenizer made by :func:`train_tokenizer`."""
    ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ModelPrepError(f"tokenizer lacks one of the special tokens {SPECIAL_TOKENS}")
    return ids  # type: ignore[return-value]


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- batches

@dataclass(frozen=True)
class Example:
    """One solved problem as token ids: the prompt and the completion (body, no EOS)."""

    prompt: tuple[int, ...]
    completion: tuple[int, ...]


def encode_problems(tokenizer, tasks, max_new_tokens: int) -> tuple[list[Example], int]:
    """Prompt/completion ids of every task whose body (+1 EOS) fits ``max_new_tokens``;
    returns the examples and how many were skipped for being too long."""
    examples, skipped = [], 0
    for task in tasks:
        completion = encode(tokenizer, task.canonical_solution or "")
        if not completion or len(completion) + 1 > max_new_tokens:
            skipped += 1
            continue
        examples.append(Example(tuple(encode(tokenizer, task.prompt)), tuple(completion)))
    return examples, skipped


def problem_batch(examples: list[Example], max_new_tokens: int, eos_id: int, pad_id: int,
                  mask_prompt: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens, attention_mask, maskable)`` in the sampler's layout: prompts left-padded to
    the longest one, then ``max_new_tokens`` completion positions (body + EOS padding).

    ``maskable`` is the completion region, plus the real prompt tokens if ``mask_prompt``
    (stage 1 learns the whole document; stage 2 only the completion).
    """
    plen = max(len(e.prompt) for e in examples)
    width = plen + max_new_tokens
    tokens = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(tokens)
    maskable = torch.zeros(tokens.shape, dtype=torch.bool)
    for row, ex in enumerate(examples):
        start = plen - len(ex.prompt)
        tokens[row, start:plen] = torch.tensor(ex.prompt)
        completion = list(ex.completion) + [eos_id] * (max_new_tokens - len(ex.completion))
        tokens[row, plen:] = torch.tensor(completion)
        attention[row, start:] = 1
        maskable[row, plen:] = True
        if mask_prompt:
            maskable[row, start:plen] = True
    return tokens, attention, maskable


def source_chunks(tokenizer, files: list[Path], chunk_len: int, eos_id: int) -> torch.Tensor:
    """Every file tokenised, joined with EOS, and cut into ``[N, chunk_len]`` rows."""
    ids: list[int] = []
    for path in files:
        ids.extend(encode(tokenizer, read_source(path)))
        ids.append(eos_id)
    n = len(ids) // chunk_len
    if n == 0:
        raise ModelPrepError(f"the source corpus has {len(ids)} tokens, fewer than one chunk of {chunk_len}")
    return torch.tensor(ids[: n * chunk_len], dtype=torch.long).view(n, chunk_len)


# ---------------------------------------------------------------- configuration

@dataclass
class PretrainConfig:
    """Everything that decides the trained model; written to the output's pretrain.json."""

    out: str
    seed: int = 0
    steps: int | None = None
    stop_at: int | None = None  # stop after this many of the `steps` schedule's steps (where to stop)
    minutes: float | None = None
    threads: int = 2
    device: str = "cpu"
    # tokenizer and data
    vocab_size: int = 1024
    stdlib_bytes: int = 5_000_000
    source_dir: str | None = None  # default: the interpreter's standard library
    chunk_len: int = 96
    max_new_tokens: int = 48
    val_size: int = 165  # validation problems read by the periodic evaluation (all of them by default)
    task_seed: int = 0
    # model
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    # optimisation
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    stage1_frac: float = 0.35
    source_frac: float = 0.3
    eval_every: int = 200
    save_every: int = 0  # also write OUT/checkpoints/step-N every N steps (0: only the final model)

    def check(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ModelPrepError("pretrain needs exactly one budget: --steps N (reproducible) or --minutes M")
        if self.steps is not None and self.steps <= 0:
            raise ModelPrepError(f"--steps must be > 0 (got {self.steps})")
        if self.stop_at is not None and (self.steps is None or not 0 < self.stop_at <= self.steps):
            raise ModelPrepError(f"--stop-at needs --steps and must be in 1..--steps (got {self.stop_at})")
        if self.minutes is not None and self.minutes <= 0:
            raise ModelPrepError(f"--minutes must be > 0 (got {self.minutes})")
        if not 0 <= self.stage1_frac <= 1:
            raise ModelPrepError(f"--stage1-frac must be in [0, 1] (got {self.stage1_frac})")
        if not 0 <= self.source_frac <= 1:
            raise ModelPrepError(f"--source-frac must be in [0, 1] (got {self.source_frac})")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ModelPrepError("--hidden-size must divide by --heads, and --heads by --kv-heads")
        if self.max_new_tokens < 4:
            raise ModelPrepError(f"--max-new-tokens must be >= 4 (got {self.max_new_tokens})")


# ---------------------------------------------------------------- schedule

def lr_at(progress: float, config: PretrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_frac * lr`` at
    ``progress`` = 1 (fraction of the step or time budget used)."""
    return config.lr * warmup_cosine(step, progress, warmup_steps=config.warmup_steps,
                                     min_lr_ratio=config.min_lr_frac)


# ---------------------------------------------------------------- evaluation (no execution)

@torch.no_grad()
def completion_loss(model, examples: list[Example], config: PretrainConfig, eos_id: int, pad_id: int,
                    seed: int = 1234) -> float:
    """Stage-2 ELBO on ``examples`` with a fixed noise seed (comparable across evaluations)."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for i in range(0, len(examples), config.batch_size):
        chunk = examples[i:i + config.batch_size]
        tokens, attention, maskable = (x.to(device) for x in problem_batch(
            chunk, config.max_new_tokens, eos_id, pad_id, mask_prompt=False))
        total += float(dllm.elbo_loss(model, tokens, maskable, attention, generator=generator)) * len(chunk)
        n += len(chunk)
    model.train()
    return total / max(1, n)


@torch.no_grad()
def exact_match(model, tokenizer, tasks, config: PretrainConfig, steps: int | None = None) -> float:
    """Fraction of ``tasks`` whose greedy completion equals the reference body as text
    (whitespace at the end ignored). A string comparison: nothing is executed."""
    if not tasks:
        return 0.0
    model.eval()
    hits = 0
    for i in range(0, len(tasks), config.batch_size):
        chunk = tasks[i:i + config.batch_size]
        out = dllm.generate(model, [encode(tokenizer, t.prompt) for t in chunk], max_new_tokens=config.max_new_tokens,
                            steps=steps or config.max_new_tokens, temperature=0.0, seed=0)
        for task, completion in zip(chunk, out.completions):
            hits += tokenizer.decode(completion).rstrip() == (task.canonical_solution or "").rstrip()
    model.train()
    return hits / len(tasks)


def copy_probe_constant(model, tokenizer, tasks, width: int) -> float | None:
    """The copy probe's constant slots (chance 1/9): mean probability of the right constant."""
    from tasks.slots import CONSTANT, slot_queries, summarise

    queries, _ = slot_queries(tokenizer, tasks, width)
    probs = dllm.infill_probability(model, [(q.ids, q.masked) for q in queries], tokenizer.pad_token_id or 0)
    by_kind = summarise([(q.task, q.kind, p, q.alternatives) for q, p in zip(queries, probs)])
    return by_kind[CONSTANT]["p_correct"] if CONSTANT in by_kind else None


def _evaluate(model, tokenizer, tasks, examples: list[Example], config: PretrainConfig, eos_id: int, pad_id: int,
              exact: bool, exact_steps: int | None = None) -> dict:
    """The periodic evaluation on validation problems: completion ELBO, the copy probe on
    the docstring's constants (chance 0.111), and (``exact``) the greedy exact-match rate."""
    record = {"val_loss": round(completion_loss(model, examples, config, eos_id, pad_id), 4)}
    copy = copy_probe_constant(model, tokenizer, tasks, config.max_new_tokens)
    if copy is not None:
        record["val_copy"] = round(copy, 3)
    if exact:
        record["val_exact"] = round(exact_match(model, tokenizer, tasks, config, steps=exact_steps), 3)
    return record


# ---------------------------------------------------------------- the recipe

def _build_tokenizer(config: PretrainConfig, train_tasks) -> tuple[PreTrainedTokenizerFast, list[Path]]:
    files = stdlib_files(config.stdlib_bytes, config.source_dir)
    texts = [read_source(p) for p in files] + [problem_text(t) for t in train_tasks]
    return train_tokenizer(texts, config.vocab_size), files


def _model_config(config: PretrainConfig, tokenizer) -> dict:
    eos_id, pad_id, mask_id = special_ids(tokenizer)
    raw = dllm.dream_config(len(tokenizer), mask_id, eos_id, pad_id, hidden_size=config.hidden_size,
                            num_layers=config.num_layers, num_heads=config.num_heads,
                            num_kv_heads=config.num_kv_heads, intermediate_size=config.intermediate_size,
                            max_position_embeddings=max(512, config.chunk_len, 128 + config.max_new_tokens),
                            tie_word_embeddings=False)
    return raw


def _completion_len(rng: random.Random, batch: list[Example], max_new_tokens: int) -> int:
    """Completion width of one stage-2 batch: between the longest body + 1 (or half of
    ``max_new_tokens``) and ``max_new_tokens``, so the model ends bodies with EOS whatever
    ``max_new_tokens`` the RL job generates with."""
    low = max(max(len(e.completion) for e in batch) + 1, max_new_tokens // 2)
    return rng.randint(min(low, max_new_tokens), max_new_tokens)


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch CPU threads, then restore the caller's setting (the library
    functions must not change a process-wide knob behind the caller's back)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain(config: PretrainConfig, log=print) -> dict:
    """Run the whole recipe and write ``config.out`` (a Dream-layout model folder); returns
    a summary (also written to ``pretrain.json`` in the folder)."""
    config.check()
    with torch_threads(config.threads):
        return _pretrain(config, log)


def _pretrain(config: PretrainConfig, log) -> dict:
    from tqdm import tqdm

    from tasks.builtin import builtin_tasks

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    started = time.time()

    train_tasks = builtin_tasks("train", seed=config.task_seed)
    val_tasks = builtin_tasks("validation", seed=config.task_seed)[: config.val_size]
    tokenizer, files = _build_tokenizer(config, train_tasks)
    eos_id, pad_id, _ = special_ids(tokenizer)
    train_examples, skipped = encode_problems(tokenizer, train_tasks, config.max_new_tokens)
    val_examples, _ = encode_problems(tokenizer, val_tasks, config.max_new_tokens)
    if not train_examples:
        raise ModelPrepError(f"no train problem fits --max-new-tokens {config.max_new_tokens}")
    chunks = source_chunks(tokenizer, files, config.chunk_len, eos_id) if config.source_frac > 0 else None
    log(f"tokenizer: {len(tokenizer)} ids; {len(train_examples)} train problems ({skipped} longer than "
        f"{config.max_new_tokens - 1} tokens skipped), {len(val_examples)} val; "
        f"{0 if chunks is None else chunks.shape[0]} source chunks of {config.chunk_len} from {len(files)} files")

    device = torch.device(config.device)
    model = dllm.init_model(_model_config(config, tokenizer), seed=config.seed).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters, {config.num_layers} layers x {config.hidden_size}")
    optimizer = torch.optim.AdamW(decay_param_groups(model, config.weight_decay),
                                  lr=config.lr, betas=(0.9, 0.98), eps=1e-8)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    budget_s = None if config.minutes is None else config.minutes * 60.0
    total_steps = config.steps
    history: list[dict] = []
    if val_examples and config.eval_every:
        history.append({"step": 0, "stage": 1, "elapsed_s": 0.0,
                        "val_loss": round(completion_loss(model, val_examples, config, eos_id, pad_id), 4)})
    ema: float | None = None
    step = 0
    last_step = config.stop_at or total_steps
    bar = tqdm(total=last_step if total_steps else int(budget_s), unit="step" if total_steps else "s",
               desc="pretrain", dynamic_ncols=True, mininterval=1.0)
    train_started = time.time()
    while True:
        elapsed = time.time() - train_started
        progress = step / total_steps if total_steps else elapsed / budget_s
        if progress >= 1.0 or (last_step and step >= last_step):
            break
        stage = 1 if progress < config.stage1_frac else 2
        lr = lr_at(progress, config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if stage == 1 and chunks is not None and rng.random() < config.source_frac:
            rows = [rng.randrange(chunks.shape[0]) for _ in range(config.batch_size)]
            tokens = chunks[rows]
            attention, maskable = None, torch.ones(tokens.shape, dtype=torch.bool)
        else:
            batch = [train_examples[rng.randrange(len(train_examples))] for _ in range(config.batch_size)]
            width = _completion_len(rng, batch, config.max_new_tokens)
            tokens, attention, maskable = problem_batch(batch, width, eos_id, pad_id, mask_prompt=stage == 1)
        tokens, maskable = tokens.to(device), maskable.to(device)
        attention = None if attention is None else attention.to(device)
        loss = dllm.elbo_loss(model, tokens, maskable, attention, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        value = loss.item()
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        bar.set_postfix(stage=stage, loss=f"{ema:.3f}", lr=f"{lr:.1e}")
        bar.update(1 if total_steps else int(time.time() - train_started) - bar.n)
        if config.eval_every and step % config.eval_every == 0:
            record = {"step": step, "stage": stage, "elapsed_s": round(time.time() - train_started, 1),
                      "train_loss": round(ema, 4)}
            if val_examples:
                record.update(_evaluate(model, tokenizer, val_tasks, val_examples, config, eos_id, pad_id,
                                        exact=stage == 2, exact_steps=config.max_new_tokens // 2))
            history.append(record)
            bar.write("eval " + " ".join(f"{k}={v}" for k, v in record.items()))
        if config.save_every and step % config.save_every == 0:
            checkpoint = Path(config.out) / "checkpoints" / f"step-{step}"
            dllm.save_model(model, checkpoint, tokenizer)
            (checkpoint / "pretrain.json").write_text(json.dumps(
                {"max_new_tokens": config.max_new_tokens, "steps": step, "checkpoint_of": asdict(config)}) + "\n")
    bar.close()
    train_s = time.time() - train_started

    final = {"step": step, "train_loss": round(ema or float("nan"), 4)}
    if val_examples:
        final.update(_evaluate(model, tokenizer, val_tasks, val_examples, config, eos_id, pad_id, exact=True))
    model = model.to("cpu").eval()
    out = Path(config.out)
    dllm.save_model(model, out, tokenizer)
    summary = {
        "max_new_tokens": config.max_new_tokens,  # what `cgrpo eval` and the RL demo generate with
        "config": asdict(config),
        "parameters": n_params,
        "steps": step,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - started, 1),
        "final": final,
        "history": history,
        "torch": torch.__version__,
    }
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
