"""Exceptions raised by nsprov.

Every error derives from :class:`NsprovError`; each leaf also subclasses the
builtin exception that matches its meaning.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Denied",
    "IdentityError",
    "InvalidAclError",
    "InvalidLocationError",
    "InvalidNamespaceError",
    "InvalidTemplateError",
    "NsprovError",
    "ProtocolError",
    "SocketInUseError",
    "SpoolError",
    "UntrustedFileError",
    "UsageError",
]


class NsprovError(Exception):
    """Base class of every nsprov error."""


class ConfigError(NsprovError, ValueError):
    """The configuration file is unreadable, malformed, or has invalid values."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class InvalidTemplateError(NsprovError, ValueError):
    """A ``{field}`` template is malformed or names an unknown field."""


class InvalidLocationError(NsprovError, ValueError):
    """A Dovecot mail location string or value is invalid."""


class InvalidNamespaceError(NsprovError, ValueError):
    """A namespace, or a set of namespaces, would fail Dovecot's own checks."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class IdentityError(NsprovError, LookupError):
    """The identity of the mail process cannot be determined."""


class InvalidAclError(NsprovError, ValueError):
    """A POSIX ACL extended attribute is malformed."""


class UntrustedFileError(NsprovError, PermissionError):
    """A file nsprov would use on behalf of others fails the trust rule (see :mod:`nsprov._trust`)."""

    def __init__(self, message: str, *, path: str = "", component: str = "") -> None:
        super().__init__(message)
        #: The file that was to be used, as given.
        self.path = path
        #: The file or directory on the way that broke the rule.
        self.component = component


class SocketInUseError(NsprovError, OSError):
    """Another server is listening on the socket path."""


class ProtocolError(NsprovError, ValueError):
    """The peer sent something the protocol does not allow; the connection must close."""


class Denied(NsprovError):  # noqa: N818 - control flow, not a failure
    """Raised by :meth:`nsprov.Login.deny` to stop the remaining actions.

    .. versionadded:: 0.1.0
    """


class SpoolError(NsprovError, OSError):
    """A configured spool cannot be scanned at all (missing, not a directory, unreadable)."""


# The post-login parent is standard library only and runs without its package (as the
# top-level ``_postlogin`` of ``_fast.py``), so it defines its own UsageError, outside
# this hierarchy.  Importing it costs nothing more: it imports no nsprov module.
from ._postlogin import UsageError as _PostLoginUsageError  # noqa: E402


class UsageError(NsprovError, _PostLoginUsageError, ValueError):
    """A command line is malformed (the ``nsprov post-login`` line Dovecot runs).

    The post-login parent raises its own ``nsprov._postlogin.UsageError``, the
    base of this class: ``except nsprov._postlogin.UsageError`` catches both,
    and :func:`nsprov._postlogin.parse_args` raises this one when given
    ``error=UsageError``.
    """
