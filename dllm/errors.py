"""The one error family users see: each area raises its own subclass with a message that
names the field or file at fault and what would fix it; the CLI prints it without a traceback."""


class CgrpoError(Exception):
    """Base of every user-facing cgrpo error."""


class DLLMError(CgrpoError):
    """A bad model folder, checkpoint or sampler/estimator argument."""
