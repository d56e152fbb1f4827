"""Dovecot 2.3 mail location strings (``maildir:/root:INDEX=…:CONTROL=…``).

Dovecot splits the part after the driver on ``:``; ``::`` stands for a literal
``:`` (core src/lib-storage/mailbox-list.c ``split_next_arg``).  Every path is
rendered with each ``:`` doubled, so a directory named ``x:INDEX=/evil`` stays
one path and injects nothing.
"""

from __future__ import annotations

import re

import attrs

from . import _fields
from .exceptions import InvalidLocationError

_DRIVER_RE = re.compile(r"[A-Za-z0-9_]+")

#: ``KEY=value`` parameters, in the order nsprov renders them, with the model field.
_PARAMS = _fields.PARAMS
#: Flags (no ``=value``) and the model field.
_FLAGS = _fields.FLAGS
#: Parameters whose value is a path (Dovecot strips one trailing ``/``).
_PATH_PARAMS = _fields.PATH_PARAMS
_PARAM_BY_KEY = dict(_PARAMS)
_FLAG_BY_KEY = dict(_FLAGS)


def escape(value: str) -> str:
    """Escape one location element: every ``:`` is doubled.

    >>> escape("/spool/co:lon")
    '/spool/co::lon'
    """
    return _fields.escape(value)


def split(text: str) -> list[str]:
    """Split the part after the driver into unescaped elements.

    >>> split("/a::b:INDEX=/i")
    ['/a:b', 'INDEX=/i']
    >>> split("a:::b")
    ['a:', 'b']
    """
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == ":":
            if i + 1 < n and text[i + 1] == ":":
                cur.append(":")
                i += 2
                continue
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _strip_slash(value: str) -> str:
    return _fields.strip_slash(value)


def _opt_path(value: str | None) -> str | None:
    return None if value is None else _strip_slash(value)


def _check_root(_inst: object, _attr: object, value: str) -> None:
    problem = _fields.root_problem(value)
    if problem is not None:
        raise InvalidLocationError(problem)


def _check_params(inst: MailLocation, _attr: object, _value: str | None) -> None:
    problem = _fields.params_problem(inst)
    if problem is not None:
        raise InvalidLocationError(problem)


@attrs.frozen(kw_only=True)
class MailLocation:
    """A Dovecot 2.3 mail location: driver, root directory and parameters.

    >>> loc = MailLocation(root="/spool/a:b", index="/home/u/.nsprov/s-a", control="/home/u/.nsprov/s-a")
    >>> loc.render()
    'maildir:/spool/a::b:INDEX=/home/u/.nsprov/s-a:CONTROL=/home/u/.nsprov/s-a'
    >>> MailLocation.parse(loc.render()) == loc
    True
    """

    driver: str = attrs.field(default="maildir", validator=attrs.validators.matches_re(_DRIVER_RE))
    root: str = attrs.field(converter=_strip_slash, validator=_check_root)
    layout: str | None = None
    inbox: str | None = attrs.field(default=None, converter=_opt_path)
    index: str | None = attrs.field(default=None, converter=_opt_path)
    index_private: str | None = attrs.field(default=None, converter=_opt_path)
    index_cache: str | None = attrs.field(default=None, converter=_opt_path)
    control: str | None = attrs.field(default=None, converter=_opt_path)
    alt: str | None = attrs.field(default=None, converter=_opt_path)
    subscriptions: str | None = None
    dirname: str | None = None
    full_dirname: str | None = None
    mailboxdir: str | None = None
    volatile_dir: str | None = attrs.field(default=None, converter=_opt_path)
    list_index: str | None = None
    broken_char: str | None = attrs.field(default=None, validator=_check_params)
    utf8: bool = False
    alt_nocheck: bool = False
    iter_index: bool = False
    no_noselect: bool = False
    no_fs_validation: bool = False

    def render(self) -> str:
        """The location string, every element escaped."""
        return _fields.render_location(self)

    def __str__(self) -> str:
        return self.render()

    @classmethod
    def parse(cls, text: str) -> MailLocation:
        """Parse a location string rendered by :meth:`render` (or written by hand)."""
        m = _DRIVER_RE.match(text)
        if m is None or text[m.end() : m.end() + 1] != ":":
            raise InvalidLocationError(f"location {text!r} has no driver (maildir:…)")
        elements = split(text[m.end() + 1 :])
        kwargs: dict[str, str | bool] = {"driver": m.group(), "root": elements[0]}
        for element in elements[1:]:
            key, eq, value = element.partition("=")
            if eq:
                field = _PARAM_BY_KEY.get(key)
                if field is None:
                    raise InvalidLocationError(
                        f"location {text!r}: Dovecot fails with 'Unknown setting: {key}'"
                    )
                if field in kwargs:
                    raise InvalidLocationError(f"location {text!r}: {key} given twice")
                kwargs[field] = value
            else:
                flag = _FLAG_BY_KEY.get(key)
                if flag is None:
                    raise InvalidLocationError(
                        f"location {text!r}: Dovecot fails with 'Unknown setting: {key}'"
                    )
                kwargs[flag] = True
        return cls(**kwargs)  # type: ignore[arg-type]

    def paths(self) -> dict[str, str]:
        """The per-user path parameters that are set, by Dovecot key."""
        return _fields.paths(self)
