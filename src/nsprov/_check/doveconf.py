"""The parsed output of ``doveconf -n`` (:class:`DovecotConf`): sections, settings, Dovecot's version."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping


@attrs.frozen
class ConfSection:
    """One section of ``doveconf -n`` output (the root has kind ``""``)."""

    kind: str
    name: str = ""
    settings: Mapping[str, str] = attrs.field(factory=dict)
    sections: tuple[ConfSection, ...] = ()

    def get(self, key: str, default: str = "") -> str:
        """The value of *key* in this section, or *default*."""
        return self.settings.get(key, default)

    def children(self, kind: str) -> list[ConfSection]:
        """The direct subsections of *kind*, in order."""
        return [s for s in self.sections if s.kind == kind]


class _Open:
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.settings: dict[str, str] = {}
        self.sections: list[_Open] = []

    def freeze(self) -> ConfSection:
        return ConfSection(
            self.kind, self.name, dict(self.settings), tuple(s.freeze() for s in self.sections)
        )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _yes(value: str) -> bool:
    return value.strip().lower() in {"yes", "y", "1"}


def _int(value: str, default: int) -> int:
    try:
        return int(value)
    except ValueError:
        return default


_HEADER_RE = re.compile(r"#\s*(\d+\.\d+[0-9.]*)")
_VERSION_RE = re.compile(r"\s*(\d+)\.(\d+)")


def major_minor(text: str) -> str | None:
    """``"2.3"`` from ``"2.3.19.1 (9b53102964)"``; None when *text* names no version."""
    m = _VERSION_RE.match(text)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


@attrs.frozen
class DovecotConf:
    """Parsed ``doveconf -n`` output: settings, sections and the version in its header.

    Settings ``doveconf -n`` leaves out have Dovecot's defaults (``first_valid_uid``
    500, ``maildir_stat_dirs`` no …).
    """

    root: ConfSection
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> DovecotConf:
        """Parse the text ``doveconf -n`` prints (2.3 and 2.4 alike)."""
        first = text.lstrip().split("\n", 1)[0]
        m = _HEADER_RE.match(first)
        stack = [_Open("", "")]
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line == "}":
                if len(stack) > 1:
                    stack.pop()
                continue
            if line.endswith("{"):
                kind, _, name = line[:-1].strip().partition(" ")
                section = _Open(kind, name.strip())
                stack[-1].sections.append(section)
                stack.append(section)
                continue
            key, eq, value = line.partition("=")
            if eq:
                stack[-1].settings[key.strip()] = _unquote(value.strip())
        return cls(stack[0].freeze(), m.group(1) if m else None)

    def setting(self, key: str, default: str = "") -> str:
        """A top-level setting."""
        return self.root.get(key, default)

    @property
    def protocols(self) -> tuple[str, ...]:
        """The enabled protocols (imap and pop3 when ``protocols`` is not set)."""
        return tuple(self.setting("protocols").split()) or ("imap", "pop3")

    @property
    def first_valid_uid(self) -> int:
        """``first_valid_uid`` (default 500)."""
        return _int(self.setting("first_valid_uid", "500"), 500)

    @property
    def last_valid_uid(self) -> int:
        """``last_valid_uid`` (default 0: no upper limit)."""
        return _int(self.setting("last_valid_uid", "0"), 0)

    @property
    def first_valid_gid(self) -> int:
        """``first_valid_gid`` (default 1)."""
        return _int(self.setting("first_valid_gid", "1"), 1)

    @property
    def last_valid_gid(self) -> int:
        """``last_valid_gid`` (default 0: no upper limit)."""
        return _int(self.setting("last_valid_gid", "0"), 0)

    @property
    def mail_access_groups(self) -> tuple[str, ...]:
        """``mail_access_groups`` (default none), split as Dovecot does (commas, spaces)."""
        return tuple(g for g in self.setting("mail_access_groups").replace(",", " ").split())

    @property
    def maildir_stat_dirs(self) -> bool:
        """``maildir_stat_dirs`` (default no)."""
        return _yes(self.setting("maildir_stat_dirs", "no"))

    @property
    def namespaces(self) -> list[ConfSection]:
        """The ``namespace`` sections."""
        return self.root.children("namespace")

    @property
    def services(self) -> dict[str, ConfSection]:
        """The ``service`` sections by name."""
        return {s.name: s for s in self.root.children("service")}

    @property
    def userdb_drivers(self) -> list[str]:
        """Each userdb's driver (2.3 ``driver = …``, 2.4 ``userdb <driver> {``)."""
        return [s.get("driver") or s.name for s in self.root.children("userdb")]

    def plugins(self, protocol: str) -> set[str]:
        """``mail_plugins`` for *protocol*: global ones plus its ``protocol`` section's."""
        sections = [self.root]
        sections += [s for s in self.root.children("protocol") if protocol in s.name.split()]
        out: set[str] = set()
        for section in sections:
            out.update(p for p in section.get("mail_plugins").split() if not p.startswith("$"))
            for boollist in section.children("mail_plugins"):  # 2.4: mail_plugins { acl = yes }
                out.update(k for k, v in boollist.settings.items() if _yes(v))
        return out

    @property
    def acl_global(self) -> str | None:
        """Where global ACLs come from, if configured (2.3 ``acl = vfile:PATH``, 2.4 ``acl_global_path``)."""
        if path := self.setting("acl_global_path"):
            return path
        for plugin in self.root.children("plugin"):
            _, _, rest = plugin.get("acl").partition(":")
            if rest.startswith("/"):
                return rest.split(":", 1)[0]
        return None
