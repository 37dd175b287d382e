"""learner: coupled-GRPO (pure functions) and the DeepSpeed learner worker group.

* :mod:`learner.config` -- ``GRPOConfig`` (the algorithm) and ``LearnerConfig`` (placement,
  engine, optimiser): the job's ``grpo:`` and ``learner:`` sections.
* :mod:`learner.grpo` -- ``group_advantages``, ``grpo_token_loss`` and ``batch_logps`` (the
  estimate with masks drawn for the *global* batch, so data-parallel ranks see exactly the
  masks a single worker would). Pure torch.
* :mod:`learner.batch` -- ``RolloutBatch``, the batch the recipe sends, ``from_token_rows``
  and ``collate``.
* :mod:`learner.worker` -- ``LearnerWorker``: one DeepSpeed engine (no Ray).
* :mod:`learner.group` -- ``LearnerGroup``: N Ray actors, one ``LearnerWorker`` each.

Importing this package does not import DeepSpeed or Ray; the worker and group modules do.
"""

from learner.batch import RolloutBatch, collate, completion_mask_from_eos, from_token_rows
from learner.config import GRPOConfig, LearnerConfig
from learner.errors import LearnerError
from learner.grpo import batch_logps, group_advantages, grpo_token_loss

__all__ = ["GRPOConfig", "LearnerConfig", "LearnerError", "RolloutBatch", "batch_logps", "collate",
           "completion_mask_from_eos", "from_token_rows", "group_advantages", "grpo_token_loss"]
