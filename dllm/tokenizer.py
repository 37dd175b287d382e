"""Tokenizer loading from a model folder, offline and without remote code."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from dllm.errors import DLLMError


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load ``tokenizer.json`` (+ its config) from a model folder; the fast tokenizer
    format serves both our own tokenizer and the published Dream/LLaDA ones."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise DLLMError(f"{path / 'tokenizer.json'} is missing: the model folder needs its tokenizer")
    return PreTrainedTokenizerFast.from_pretrained(str(path))
