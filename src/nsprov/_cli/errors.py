"""The one error printer of the command-line front ends.

Every front end reports an error the same way: ``PROG: error: LINE`` on
stderr, one line per problem, each line escaped (a name in a message may come
from a spool entry or a config file that others write).
"""

from __future__ import annotations

import sys

from .._postlogin import escape


def print_error(message: str, *, prog: str = "nsprov") -> None:
    """Print *message* as one escaped ``PROG: error:`` line on stderr."""
    print(f"{prog}: error: {escape(message)}", file=sys.stderr)


def report(error: BaseException, *, prog: str = "nsprov") -> int:
    """Print *error*, one line per problem it carries; the exit status of a domain error (1).

    A :class:`~nsprov.exceptions.ConfigError` or an
    :class:`~nsprov.exceptions.InvalidNamespaceError` carries every problem
    found, each printed on a line of its own; any other error is its message.
    """
    for line in getattr(error, "problems", (str(error),)):
        print_error(line, prog=prog)
    return 1
