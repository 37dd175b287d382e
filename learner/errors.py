"""The learner's one user-facing error type."""

from errors import CgrpoError


class LearnerError(CgrpoError):
    """A bad GRPO/learner config value, a malformed rollout batch, or an unusable checkpoint.

    The message names the field or file at fault and what would fix it; the CLI prints it
    without a traceback.
    """
