"""cgrpo's pure-torch core for masked diffusion LMs: models, masking, sampler, estimators, AR-ness.

Nothing here knows about Ray, DeepSpeed or Redis, so every piece is testable alone.
Names are imported lazily: ``from dllm.errors import DLLMError`` must not pay for importing
torch and transformers.
"""

from importlib import import_module

_EXPORTS = {
    "global_arness": "dllm.arness", "local_arness": "dllm.arness",
    "DLLMError": "dllm.errors",
    "coupled_logps": "dllm.estimators", "d1_logps": "dllm.estimators", "decoupled_logps": "dllm.estimators",
    "estimate_logps": "dllm.estimators",
    "infill_probability": "dllm.infill",
    "elbo_loss": "dllm.masking", "forward_process": "dllm.masking",
    "DiffusionLM": "dllm.model", "dream_config": "dllm.model", "init_model": "dllm.model",
    "llada_config": "dllm.model", "load_model": "dllm.model", "save_model": "dllm.model",
    "ALGORITHMS": "dllm.sampler", "Generation": "dllm.sampler", "generate": "dllm.sampler",
    "load_tokenizer": "dllm.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dllm' has no attribute {name!r}")
