"""The torch core's user-facing error type (part of the family rooted in :mod:`errors`)."""

from errors import CgrpoError


class DLLMError(CgrpoError):
    """A bad model folder, checkpoint or sampler/estimator argument."""
