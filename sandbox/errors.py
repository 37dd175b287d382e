"""The sandbox's one user-facing error type (see docs/contracts.md, "Errors")."""

from errors import CgrpoError


class SandboxError(CgrpoError):
    """A sandbox backend cannot run (missing bubblewrap, no Docker engine or image), or a
    user-supplied limit, tests file or backend name is wrong. The message says how to fix it."""
