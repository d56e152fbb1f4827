"""Checks of the configuration itself: its problems as findings, and the path templates."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .._identity import MailUser
from .._model import check_namespaces
from .._perms import Identity
from .._scan import _Builder
from ..exceptions import NsprovError
from .findings import Finding, _f

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._config import Config


_PROBLEM_KEY_RE = re.compile(r"[A-Za-z_][\w.\[\]]*")


def _config_fix(subject: str, message: str) -> str:
    if message.startswith("unknown key"):
        _, _, meant = message.partition("; did you mean ")
        if meant:
            return f"Rename {subject} to {meant.rstrip('?')}, or remove it."
        return f"Remove {subject} or correct its spelling; every key is in docs/configuration.md."
    if message.startswith("expected"):
        return f"Give {subject} the type the configuration reference lists ({message})."
    if message == "required key missing":
        return f"Add {subject}."
    if message.startswith("cannot read"):
        return "Create the file, or name the right one with --config=PATH."
    if message.startswith("invalid TOML"):
        return "Fix the TOML syntax at the line and column named."
    return f"Change {subject}: {message}."


def config_findings(path: str, problems: Sequence[str]) -> list[Finding]:
    """One ``config-error`` per problem :func:`nsprov._config.load_config` reported."""
    out = []
    for problem in problems:
        rest = problem.removeprefix(f"{path}: ")
        key, sep, message = rest.partition(": ")
        if not sep or not _PROBLEM_KEY_RE.fullmatch(key):
            key, message = path, rest
        out.append(_f("error", "config-error", key, message, _config_fix(key, message)))
    return out


_SAMPLE_ENTRIES = (b"sales", b"Sales Team", b"a,b", b"pct%u", b"x")
_SAMPLE_USER = MailUser(user="sample", home="/home/sample", identity=Identity(uid=60000, gid=60000))
_PATH_KEYS = ("index", "control", "index_private", "inbox")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_templates(config: Config) -> list[Finding]:
    """Templates that render output Dovecot refuses, shared paths, paths inside a spool."""
    out: list[Finding] = []
    dialect = config.output_dialect
    for i, spool in enumerate(config.spools, 1):
        where = f"spool[{i}]"
        try:
            builder = _Builder(spool, _SAMPLE_USER)
            namespaces = []
            for raw in _SAMPLE_ENTRIES:
                name = raw.decode()
                ns = builder.build(raw, name, f"{spool.path}/{name}")
                dialect.settings(ns)
                namespaces.append(ns)
            check_namespaces(namespaces, reserved_names=config.reserved_names)
        except NsprovError as e:
            out.append(
                _f(
                    "error",
                    "template-invalid",
                    where,
                    f"spool {spool.path}: its templates give namespaces Dovecot refuses, so "
                    f"no entry is served: {e}",
                    'Fix the prefix (or name) template: with list = "yes" or "children" the '
                    "prefix must end with the separator and must not start with it, e.g. "
                    'prefix = "Shared{sep}{name}{sep}".',
                )
            )
            continue
        for key in _PATH_KEYS:
            template = getattr(spool, key)
            if template is not None and not template.fields & {"home", "user"}:
                out.append(
                    _f(
                        "error",
                        "template-not-per-user",
                        f"{where}.{key}",
                        f"{key} = {template.text!r} is the same directory for every user: "
                        "Dovecot's index and state files of one user would be read and written "
                        "by all, and fail on permissions",
                        f'Use {{home}} or {{user}}, e.g. {key} = "{{home}}/.nsprov/{{ns}}".',
                    )
                )
        inside = next(
            (
                (key, path, other.path)
                for ns in namespaces
                for key, path in ns.location.paths().items()
                for other in config.spools
                if _inside(path, other.path)
            ),
            None,
        )
        if inside is not None:
            key, path, other_path = inside
            out.append(
                _f(
                    "error",
                    "template-invalid",
                    where,
                    f"{key}={path} is inside the spool {other_path}: per-user directories "
                    "would appear there as entries (and be served)",
                    "Keep index, control, index_private and inbox outside every spool, e.g. "
                    '"{home}/.nsprov/{ns}".',
                )
            )
    return out
