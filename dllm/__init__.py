"""cgrpo's pure-torch core for masked diffusion LMs: models, masking, sampler, estimators, AR-ness.

Nothing here knows about Ray, DeepSpeed or Redis, so every piece is testable alone.
"""

from dllm.arness import global_arness, local_arness
from dllm.errors import CgrpoError, DLLMError
from dllm.estimators import coupled_logps, d1_logps, decoupled_logps, estimate_logps
from dllm.masking import elbo_loss, forward_process
from dllm.model import DiffusionLM, dream_config, init_model, llada_config, load_model, save_model
from dllm.sampler import ALGORITHMS, Generation, generate
from dllm.tokenizer import load_tokenizer

__all__ = [
    "ALGORITHMS", "CgrpoError", "DLLMError", "DiffusionLM", "Generation", "coupled_logps", "d1_logps",
    "decoupled_logps", "dream_config", "elbo_loss", "estimate_logps", "forward_process", "generate",
    "global_arness", "init_model", "llada_config", "load_model", "load_tokenizer", "local_arness", "save_model",
]
