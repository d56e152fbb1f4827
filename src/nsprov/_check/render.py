"""Output of a :class:`~nsprov._check.report.Report`: JSON, and a table for people."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._names import HASH_LENGTH, NAMING_SCHEME, SLUG_LENGTH
from .findings import SEVERITIES

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TextIO

    from .report import Report


def render_json(report: Report) -> str:
    """The report as a JSON document (``--format=json``)."""
    import json  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415

    doc = {
        "nsprov": version("nsprov"),
        "config": report.config_path,
        "dialect": report.dialect,
        "naming_scheme": NAMING_SCHEME,
        "naming": {"slug_length": SLUG_LENGTH, "hash_length": HASH_LENGTH},
        "dovecot": {
            "version": report.dovecot_version,
            "source": report.version_source,
            "doveconf": report.doveconf,
        },
        "status": report.status,
        "summary": report.counts(),
        "findings": [f.as_dict() for f in report.findings],
        "users": [u.as_dict() for u in report.users],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


_COLOURS = {"error": "\033[1;31m", "warning": "\033[1;33m", "info": "\033[36m"}
_BOLD = "\033[1m"
_RESET = "\033[0m"


def use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not environ.get("NO_COLOR")


def render_table(report: Report, *, colour: bool = False, width: int = 100) -> str:
    """The report for humans: findings by severity, each with its fix, then the users."""
    import textwrap  # noqa: PLC0415

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    version = (
        f"Dovecot {report.dovecot_version} ({report.version_source})"
        if report.dovecot_version
        else "Dovecot version unknown"
    )
    meta = [f"dialect {report.dialect}" if report.dialect else "", version]
    meta.append(f"naming scheme {NAMING_SCHEME} (slug {SLUG_LENGTH}, hash {HASH_LENGTH})")
    from .._postlogin import escape  # noqa: PLC0415 - the one escaping of human output

    lines = [f"nsprov check: {escape(report.config_path)}"]
    lines += ["  " + "; ".join(m for m in meta if m), ""]

    def wrap(text: str, first: str) -> list[str]:
        return textwrap.wrap(
            text,
            width,
            initial_indent=first,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [first]

    for f in report.findings:
        tag = paint(f"{f.severity.upper():<7}", _COLOURS[f.severity])
        head = f"{tag} {paint(f.code, _BOLD)}"
        lines.append(head + (f"  {escape(f.subject)}" if f.subject else ""))
        lines += wrap(escape(f.message), "    ")
        lines += wrap(escape(f.fix), "    fix: ")
        lines.append("")
    if not report.findings:
        lines += ["No problems found.", ""]
    if report.users:
        lines.append(f"Users ({len(report.users)}):")
        name_w = max(4, *(len(escape(u.user)) for u in report.users))
        lines.append(
            f"  {'USER':<{name_w}}  {'UID':>7}  {'NAMESPACES':>10}  {'ENV BYTES':>9}  "
            f"{'USERDB_KEYS':>11}  SERVE REPLY"
        )
        for u in report.users:
            counts = f"{u.served}/{u.found}"
            serve = (
                "-"
                if u.serve is None
                else f"{u.serve.fits}/{u.serve.total} ({u.serve.full_size} B)"
            )
            lines.append(
                f"  {escape(u.user):<{name_w}}  {u.uid:>7}  {counts:>10}  {u.env_bytes:>9}  "
                f"{u.userdb_keys_bytes:>11}  {serve}"
            )
        lines.append("")
    totals = report.counts()
    summary = ", ".join(
        paint(_plural(totals[s], s), _COLOURS[s]) if totals[s] else _plural(0, s)
        for s in SEVERITIES
    )
    lines.append(summary)
    return "\n".join(lines) + "\n"


def _plural(count: int, severity: str) -> str:
    return f"{count} {severity}" + ("s" if count != 1 and severity != "info" else "")
