"""Model preparation's user-facing error type."""

from errors import CgrpoError


class ModelPrepError(CgrpoError):
    """A bad ``cgrpo pretrain`` / ``cgrpo adapt`` argument, or a source model that cannot be
    converted; the message names the flag or file and what would fix it."""
