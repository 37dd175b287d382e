"""learner: coupled-GRPO loss (pure functions) and the DeepSpeed learner worker group.

* :mod:`learner.grpo` -- ``GRPOConfig``, ``group_advantages``, ``grpo_token_loss`` (pure torch).
* :mod:`learner.batch` -- ``RolloutBatch``, the batch format the orchestrator sends, and ``collate``.
* :mod:`learner.logps` -- the configured log-prob estimator, with masks drawn for the *global*
  batch so that data-parallel ranks see exactly the masks a single worker would.
* :mod:`learner.worker` -- ``LearnerWorker``: one DeepSpeed engine (no Ray).
* :mod:`learner.group` -- ``LearnerGroup``: N Ray actors, one ``LearnerWorker`` each.

Importing this package does not import DeepSpeed or Ray; the worker and group modules do.
"""

from learner.batch import RolloutBatch, collate, completion_mask_from_eos
from learner.errors import LearnerError
from learner.grpo import GRPOConfig, group_advantages, grpo_token_loss

__all__ = ["GRPOConfig", "LearnerError", "RolloutBatch", "collate", "completion_mask_from_eos",
           "group_advantages", "grpo_token_loss"]
