"""The one error family users see, and the one way a bad config becomes a message.

Each area raises its own subclass of :class:`CgrpoError` (``ConfigError``,
``SandboxError``, ``LearnerError``, ...) with a message that names the field or file at
fault and what would fix it; the CLI prints that one line instead of a traceback. This
module sits below every package and imports nothing at load time (pydantic only when a
config is validated), so the sandbox, the Redis state and the dashboard share the family
without importing the torch core, and the sandbox still loads in a bare interpreter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class CgrpoError(Exception):
    """Base of every user-facing cgrpo error."""


class ConfigError(CgrpoError):
    """A config (job YAML section, component config, ``--set`` override) that cannot be used;
    the message names the field and the fix."""


def describe_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """``source: section.field: what is wrong`` for the first problem, and how many more.

    ``prefix`` is the dotted path of the model inside a job config (``"learner"`` when a
    ``LearnerConfig`` is validated alone), so a message reads the same whichever level
    caught it.
    """
    first = exc.errors()[0]
    where = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(first["loc"])) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown field (check the spelling against docs/config.md)"
    elif isinstance(first.get("input"), (str, int, float, bool)) and first["type"] != "missing" \
            and str(first["input"]) not in message:
        message += f" (got {first['input']!r})"
    more = len(exc.errors()) - 1
    return f"{source}: {where}: {message}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


M = TypeVar("M", bound="BaseModel")


def validated(model: type[M], data: object, *, source: str, prefix: str = "",
              error: type[CgrpoError] = ConfigError) -> M:
    """``model`` built from a mapping, or ``error`` with :func:`describe_validation_error`'s
    message. Errors a component raises while validating its own fields (a ``CgrpoError``
    from a dataclass's checks) keep their message, prefixed with ``source``."""
    if data is None:
        data = {}
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise error(f"{source}: {prefix or 'config'}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe_validation_error(exc, source, prefix)) from None
    except CgrpoError as exc:
        raise error(f"{source}: {prefix + ': ' if prefix else ''}{exc}") from None
