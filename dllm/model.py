"""Masked diffusion LMs on transformers' decoder blocks, with bidirectional attention.

Two published layouts are supported, chosen by the checkpoint's ``config.json``:

* **Dream** (``model_type: "Dream"``, e.g. apple/DiffuCoder-7B-Instruct): Qwen2 weights
  and names (``model.layers.N.self_attn.q_proj.weight`` ...), causal mask removed, and the
  logit *shift* kept from the AR initialisation: the hidden state at ``i-1`` predicts
  token ``i``.
* **LLaDA** (``model_type: "llada"``, e.g. GSAI-ML/LLaDA-8B-Instruct): Llama-style blocks
  stored under OLMo names (``model.transformer.blocks.N.attn_out.weight`` ...), no shift.

Both are built from transformers' ``Qwen2Model`` / ``LlamaModel`` with every attention
layer switched to non-causal; the LLaDA names are mapped on load and save, so a real
checkpoint dropped into a folder loads unchanged. :meth:`DiffusionLM.forward` always
returns logits aligned with the input (``logits[:, i]`` predicts token ``i``), so
callers never see the layout.

:class:`KVCache` and :meth:`DiffusionLM.block_logits` serve the sampler's block-wise
decoding (Fast-dLLM's approximate KV cache): one full pass stores every layer's keys and
values, later passes compute only a window of positions and read the rest from the store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

from dllm.errors import DLLMError

DREAM = "dream"
LLADA = "llada"

# LLaDA (OLMo naming) -> our Llama backbone naming, per block and global.
_LLADA_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ff_norm.weight": "post_attention_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight",
    "v_proj.weight": "self_attn.v_proj.weight",
    "attn_out.weight": "self_attn.o_proj.weight",
    "ff_proj.weight": "mlp.gate_proj.weight",
    "up_proj.weight": "mlp.up_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
}
_LLADA_GLOBAL_NAMES = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}


def _layout_of(config: dict) -> str:
    model_type = str(config.get("model_type", "")).lower()
    if model_type == "dream":
        return DREAM
    if model_type == "llada":
        return LLADA
    raise DLLMError(
        f"config.json has model_type {config.get('model_type')!r}; expected 'Dream' "
        "(DiffuCoder/Dream layout) or 'llada' (LLaDA layout)"
    )


def _backbone_config(config: dict, layout: str):
    """Translate a checkpoint's config.json into the transformers config of its backbone."""
    if layout == DREAM:
        keys = set(Qwen2Config().to_dict())
        kwargs = {k: v for k, v in config.items() if k in keys and k not in ("model_type", "architectures")}
        kwargs["use_sliding_window"] = False
        kwargs["use_cache"] = False
        return Qwen2Config(**kwargs)
    return LlamaConfig(
        vocab_size=config.get("embedding_size") or config["vocab_size"],
        hidden_size=config["d_model"],
        intermediate_size=config["mlp_hidden_size"],
        num_hidden_layers=config["n_layers"],
        num_attention_heads=config["n_heads"],
        num_key_value_heads=config.get("n_kv_heads") or config["n_heads"],
        max_position_embeddings=config.get("max_sequence_length", 4096),
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=config.get("rope_theta", 10000.0),
        attention_bias=bool(config.get("include_bias", False) or config.get("include_qkv_bias", False)),
        mlp_bias=False,
        tie_word_embeddings=bool(config.get("weight_tying", False)),
        use_cache=False,
    )


class KVCache:
    """Every layer's keys and values for the whole sequence, as of the last full pass.

    A bidirectional model has no exact cache: every position's keys depend on every other
    position. Fast-dLLM's observation is that, while one block is being denoised, the keys
    and values outside it barely change from step to step, so they can be reused until the
    next full pass refreshes them. transformers' attention layers hand each layer's fresh
    (rotated) keys and values to :meth:`update` and attend to what it returns: during a full
    pass (``window`` None) they are stored; during a windowed pass they overwrite the
    window's slots and the layer attends to the whole stored sequence.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.window: tuple[int, int] | None = None

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, kwargs=None):
        if self.window is None:
            del self.keys[layer_idx:], self.values[layer_idx:]
            self.keys.append(key)
            self.values.append(value)
            return key, value
        start, end = self.window
        self.keys[layer_idx][:, :, start:end] = key
        self.values[layer_idx][:, :, start:end] = value
        return self.keys[layer_idx], self.values[layer_idx]


def _key_mask(attention_mask: torch.Tensor | None, queries: int) -> torch.Tensor | None:
    """``[B, 1, queries, L]`` boolean mask hiding padded keys from every query (None: no padding)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :].expand(-1, 1, queries, -1)


class DiffusionLM(nn.Module):
    """A bidirectional Transformer that predicts the clean token at every position.

    ``raw_config`` is the checkpoint's own config.json, kept verbatim so that saving
    writes back a config the original tooling still understands.
    """

    def __init__(self, raw_config: dict):
        super().__init__()
        self.raw_config = dict(raw_config)
        self.layout = _layout_of(raw_config)
        self.shift = self.layout == DREAM
        for field in ("mask_token_id",):
            if raw_config.get(field) is None:
                raise DLLMError(f"config.json lacks {field!r}: a masked diffusion model needs its [MASK] id")
        self.mask_token_id = int(raw_config["mask_token_id"])
        self.eos_token_id = raw_config.get("eos_token_id")
        self.pad_token_id = raw_config.get("pad_token_id", self.eos_token_id)
        bconfig = _backbone_config(raw_config, self.layout)
        bconfig._attn_implementation = "sdpa"
        self.backbone_config = bconfig
        backbone_cls = Qwen2Model if self.layout == DREAM else LlamaModel
        self.model = backbone_cls(bconfig)
        for layer in self.model.layers:
            layer.self_attn.is_causal = False
        self.lm_head = nn.Linear(bconfig.hidden_size, bconfig.vocab_size, bias=False)
        self.tied = bool(bconfig.tie_word_embeddings)
        if self.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def vocab_size(self) -> int:
        return self.lm_head.out_features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, L, V]`` with ``logits[:, i]`` predicting token ``i``.

        ``attention_mask`` (``[B, L]``, 1 = real token) hides padding from every query;
        without it all positions attend to all positions.
        """
        mask4d = _key_mask(attention_mask, input_ids.shape[1])
        logits = self.lm_head(self._hidden_states(input_ids, mask4d))
        if self.shift:
            # Dream layout: output at i-1 predicts token i; position 0 has no predictor
            # and is never a prediction target (it is always prompt).
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def block_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, kv_cache: KVCache,
                     start: int, end: int, *, reuse: bool, window_end: int | None = None) -> torch.Tensor:
        """Logits ``[B, end - start, V]`` predicting tokens ``start .. end-1`` of ``input_ids``
        (the whole ``[B, L]`` sequence), with the output head run only where it is needed.

        ``reuse=False``: a full pass that refills ``kv_cache``. ``reuse=True``: only the
        window from the first predictor of ``start`` (``start - 1`` under the Dream shift)
        up to ``window_end`` (default ``end``; the prefix cache recomputes everything after
        the block too) is computed; every other position's keys and values are read from
        ``kv_cache`` as the last full pass left them.
        """
        first = start - 1 if self.shift else start  # Dream: the output at start-1 predicts start
        if first < 0:
            raise DLLMError("block_logits: the Dream layout cannot predict position 0 (it has no predecessor)")
        if not reuse:
            kv_cache.window = None
            hidden = self._hidden_states(input_ids, _key_mask(attention_mask, input_ids.shape[1]), kv_cache)
            return self.lm_head(hidden[:, first:first + end - start])
        if not kv_cache.keys:
            raise DLLMError("block_logits: the KV cache is empty; run a pass with reuse=False first")
        last = max(end, window_end or end)
        kv_cache.window = (first, last)
        hidden = self._hidden_states(input_ids[:, first:last], _key_mask(attention_mask, last - first), kv_cache,
                                     offset=first)
        return self.lm_head(hidden[:, :end - start])

    def _hidden_states(self, input_ids: torch.Tensor, mask4d: torch.Tensor | None,
                       kv_cache: KVCache | None = None, offset: int = 0) -> torch.Tensor:
        """Run transformers' decoder layers ourselves: their model classes build a causal
        mask internally, and a diffusion LM must never see one. ``input_ids`` sit at
        positions ``offset ..`` of the sequence (a window of it when ``offset`` > 0)."""
        hidden = self.model.embed_tokens(input_ids)
        position_ids = torch.arange(offset, offset + input_ids.shape[1], device=input_ids.device)[None]
        rotary = self.model.rotary_emb(hidden, position_ids)
        for layer in self.model.layers:
            hidden = layer(hidden, attention_mask=mask4d, position_embeddings=rotary, position_ids=position_ids,
                           cache=kv_cache)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return self.model.norm(hidden)

    # --- state dict in the checkpoint's own names -------------------------------------------
    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        state = {k: v for k, v in self.state_dict().items() if not (self.tied and k == "lm_head.weight")}
        state = {k: v for k, v in state.items() if "rotary_emb" not in k}
        if self.layout == LLADA:
            state = _rename(state, _to_llada_name)
        return state

    def load_checkpoint_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        if self.layout == LLADA:
            state = _rename(state, _from_llada_name)
        expected = {k for k in self.state_dict() if "rotary_emb" not in k}
        if self.tied:
            expected.discard("lm_head.weight")
            state.pop("lm_head.weight", None)
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise DLLMError(
                f"{source}: weights do not match config.json "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        own = self.state_dict()
        for name, tensor in state.items():
            if tuple(own[name].shape) != tuple(tensor.shape):
                raise DLLMError(f"{source}: {name} has shape {tuple(tensor.shape)}, config.json implies {tuple(own[name].shape)}")
        self.load_state_dict(state, strict=False, assign=True)
        if self.tied:
            self.lm_head.weight = self.model.embed_tokens.weight


def _rename(state: dict, fn) -> dict:
    return {fn(k): v for k, v in state.items()}


_BLOCK_RE = re.compile(r"^model\.transformer\.blocks\.(\d+)\.(.+)$")
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def _from_llada_name(name: str) -> str:
    if name in _LLADA_GLOBAL_NAMES:
        return _LLADA_GLOBAL_NAMES[name]
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in _LLADA_BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_LLADA_BLOCK_NAMES[m.group(2)]}"
    return name


def _to_llada_name(name: str) -> str:
    inverse_global = {v: k for k, v in _LLADA_GLOBAL_NAMES.items()}
    if name in inverse_global:
        return inverse_global[name]
    m = _LAYER_RE.match(name)
    if m:
        inverse_block = {v: k for k, v in _LLADA_BLOCK_NAMES.items()}
        if m.group(2) in inverse_block:
            return f"model.transformer.blocks.{m.group(1)}.{inverse_block[m.group(2)]}"
    return name


def _read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not path.is_dir():
        raise DLLMError(f"model folder {str(path)!r} does not exist")
    if not config_file.is_file():
        raise DLLMError(f"{config_file} is missing: a model folder needs config.json and *.safetensors")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise DLLMError(f"{config_file} is not valid JSON ({exc})") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = sorted(p.name for p in path.glob("*.safetensors"))
    if not shards:
        raise DLLMError(f"{path} has no *.safetensors weights (expected model.safetensors or a sharded index)")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not (path / shard).is_file():
            raise DLLMError(f"{path / shard} is listed in the index but missing")
        state.update(load_file(str(path / shard)))
    return state


def load_model(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> DiffusionLM:
    """Load a Dream- or LLaDA-layout checkpoint folder (config.json + safetensors)."""
    path = Path(path)
    raw = _read_config(path)
    state = _read_weights(path)
    with torch.device("meta"):
        model = DiffusionLM(raw)
    model.load_checkpoint_state_dict(state, source=str(path))
    # Buffers (rotary inv_freq) were created on meta: rebuild them for real.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.backbone_config)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


def init_model(raw_config: dict, seed: int = 0) -> DiffusionLM:
    """A freshly initialised model for ``raw_config`` (tests, pre-training from scratch)."""
    torch.manual_seed(seed)
    model = DiffusionLM(raw_config)
    std = model.backbone_config.initializer_range
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
    return model


def save_model(model: DiffusionLM, path: str | Path, tokenizer=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) in the checkpoint's own layout."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.checkpoint_state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(model.raw_config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def dream_config(vocab_size: int, mask_token_id: int, eos_token_id: int, pad_token_id: int, *,
                 hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                 intermediate_size: int = 128, max_position_embeddings: int = 512,
                 tie_word_embeddings: bool = False) -> dict:
    """A Dream-layout config.json dict (what apple/DiffuCoder-7B-Instruct ships, scaled down)."""
    return {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": tie_word_embeddings,
        "attention_dropout": 0.0,
        "mask_token_id": mask_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "bos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def llada_config(vocab_size: int, mask_token_id: int, eos_token_id: int, *, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, mlp_hidden_size: int = 128, max_sequence_length: int = 512) -> dict:
    """A LLaDA-layout config.json dict (GSAI-ML/LLaDA-8B-Instruct's fields, scaled down)."""
    return {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": n_heads,
        "n_layers": n_layers,
        "mlp_hidden_size": mlp_hidden_size,
        "vocab_size": vocab_size,
        "embedding_size": vocab_size,
        "max_sequence_length": max_sequence_length,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "include_bias": False,
        "weight_tying": False,
        "mask_token_id": mask_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": eos_token_id,
    }
