"""`cgrpo pretrain` and `cgrpo adapt`: make the Dream-layout models the RL jobs start from.

The argument defaults come from the config dataclasses (:class:`PretrainConfig`,
:class:`AdaptConfig`), so the help text and the library never disagree.
"""

from __future__ import annotations

import argparse
from dataclasses import fields


def register(subparsers) -> None:
    _register_pretrain(subparsers)
    _register_adapt(subparsers)


# ---------------------------------------------------------------- pretrain

def _register_pretrain(subparsers) -> None:
    from modelprep.pretrain import PretrainConfig

    d = {f.name: f.default for f in fields(PretrainConfig)}

    p = subparsers.add_parser(
        "pretrain",
        help="train the tiny dLLM (tokenizer + model) from scratch",
        description="Train a byte-level BPE tokenizer and a small Dream-layout masked diffusion LM from "
        "scratch: stage 1 masked-diffusion ELBO pre-training on solved built-in train problems and "
        "standard-library Python source, stage 2 prompt->solution fine-tuning (prompt never masked, "
        "completion padded with EOS). Held-out and validation problems are never trained on. Reproducible for a given "
        "--seed and --steps on the same machine; writes a model folder that `dllm.load_model` loads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output model folder (config.json, model.safetensors, tokenizer)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimizer steps (reproducible budget)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget; the schedule follows elapsed time")
    p.add_argument("--stop-at", type=int, default=d["stop_at"], metavar="N",
                   help="stop after N steps of the --steps schedule (learning rate and stage switch as for the "
                   "full run): the model equals that run's checkpoint at step N. Chosen on validation")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed for init, batches and noise")
    p.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads")
    p.add_argument("--device", default=d["device"], help="torch device (cpu, cuda)")
    g = p.add_argument_group("data")
    g.add_argument("--vocab-size", type=int, default=d["vocab_size"], help="BPE vocabulary size incl. specials")
    g.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"],
                   help="completion width (body + EOS padding); longer bodies are skipped")
    g.add_argument("--chunk-len", type=int, default=d["chunk_len"], help="tokens per standard-library chunk")
    g.add_argument("--source-frac", type=float, default=d["source_frac"],
                   help="share of stage-1 batches that are standard-library chunks")
    g.add_argument("--source-dir", default=d["source_dir"],
                   help="folder whose *.py files are the source corpus (default: the interpreter's standard library)")
    g.add_argument("--stdlib-bytes", type=int, default=d["stdlib_bytes"], help="cap on standard-library source")
    g.add_argument("--val-size", type=int, default=d["val_size"],
                   help="validation problems (never trained on) read by the periodic evaluation")
    m = p.add_argument_group("model")
    m.add_argument("--hidden-size", type=int, default=d["hidden_size"])
    m.add_argument("--layers", dest="num_layers", type=int, default=d["num_layers"])
    m.add_argument("--heads", dest="num_heads", type=int, default=d["num_heads"])
    m.add_argument("--kv-heads", dest="num_kv_heads", type=int, default=d["num_kv_heads"])
    m.add_argument("--intermediate-size", type=int, default=d["intermediate_size"])
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=d["batch_size"])
    o.add_argument("--lr", type=float, default=d["lr"], help="peak AdamW learning rate (cosine decay)")
    o.add_argument("--warmup-steps", type=int, default=d["warmup_steps"])
    o.add_argument("--stage1-frac", type=float, default=d["stage1_frac"],
                   help="share of the budget spent in stage 1 (the rest is prompt->solution fine-tuning)")
    o.add_argument("--eval-every", type=int, default=d["eval_every"], help="steps between evaluation prints (0: never)")
    o.add_argument("--save-every", type=int, default=d["save_every"],
                   help="also save OUT/checkpoints/step-N every N steps, to choose where to stop (0: never)")
    p.set_defaults(func=_pretrain)


def _pretrain(args) -> int:
    from modelprep.pretrain import PretrainConfig, pretrain

    names = {f.name for f in fields(PretrainConfig)}
    config = PretrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    summary = pretrain(config)
    final = summary["final"]
    print(f"wrote {config.out}: {summary['parameters'] / 1e6:.2f}M parameters, {summary['steps']} steps in "
          f"{summary['train_seconds'] / 60:.1f} min (total {summary['total_seconds'] / 60:.1f} min); "
          + ", ".join(f"{k} {v}" for k, v in final.items() if k != "step"))
    return 0


# ---------------------------------------------------------------- adapt

def _register_adapt(subparsers) -> None:
    from modelprep.adapt import AdaptConfig

    d = {f.name: f.default for f in fields(AdaptConfig)}
    p = subparsers.add_parser(
        "adapt",
        help="turn an HF causal LM (Qwen2/Llama, folder or GGUF) into a Dream-layout dLLM",
        description="AR->diffusion adaptation as DiffuCoder was made from Qwen2.5-Coder: load a Qwen2 or "
        "Llama causal LM (an HF folder, or a GGUF file), add a mask token to its tokenizer (resizing the "
        "embeddings), write a Dream config (Qwen2 blocks; a Llama source gets zero q/k/v biases so the "
        "function is unchanged), drop the causal mask, keep the logit shift, and continue training "
        "with the masked-diffusion ELBO on standard-library Python source.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--from", dest="source", required=True,
                   help="HF model folder, a .gguf file, or a folder holding one .gguf")
    p.add_argument("--out", required=True, help="output Dream-layout model folder")
    p.add_argument("--steps", type=int, default=d["steps"], help="masked-diffusion training steps after conversion")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--seq-len", type=int, default=d["seq_len"], help="tokens per training chunk")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak AdamW learning rate (cosine decay)")
    p.add_argument("--warmup-steps", type=int, default=d["warmup_steps"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads")
    p.add_argument("--device", default=d["device"], help="torch device (cpu, cuda)")
    p.add_argument("--dtype", default=d["dtype"], choices=["float32", "bfloat16"], help="weights dtype while training")
    p.add_argument("--source-dir", default=d["source_dir"],
                   help="folder whose *.py files are the training text (default: the interpreter's standard library)")
    p.add_argument("--stdlib-bytes", type=int, default=d["stdlib_bytes"], help="cap on training source")
    p.add_argument("--eval-chunks", type=int, default=d["eval_chunks"],
                   help="held-out source chunks for the ELBO reported before and after training")
    p.set_defaults(func=_adapt)


def _adapt(args) -> int:
    from modelprep.adapt import AdaptConfig, adapt

    names = {f.name for f in fields(AdaptConfig)}
    config = AdaptConfig(**{k: v for k, v in vars(args).items() if k in names})
    summary = adapt(config)
    print(f"wrote {config.out}: {summary['architecture']} -> Dream, vocab {summary['vocab_size']} "
          f"(mask id {summary['mask_token_id']}), {summary['steps']} steps"
          + (f", held-out ELBO {summary['heldout_elbo_before']:.3f} -> {summary['heldout_elbo_after']:.3f}"
             if summary["steps"] else ""))
    return 0
