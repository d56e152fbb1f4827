"""Checks against Dovecot's settings: version, separator, namespaces, prefixes, identity, ACLs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..exceptions import NsprovError
from .doveconf import ConfSection, DovecotConf, _yes
from .findings import Finding, _f, _show
from .templates import _inside

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._config import Config, SpoolConfig
    from .structure import SpoolScan


def check_version(config: Config, version: str | None, source: str | None) -> list[Finding]:
    """The installed Dovecot version against ``[dovecot] version``."""
    if version is None:
        return [
            _f(
                "info",
                "dovecot-version-unknown",
                None,
                "the installed Dovecot version could not be determined (no dovecot binary, no "
                "doveconf): the dialect was not checked",
                "Pass --dovecot=PATH or --dovecot-version=X.Y.",
            )
        ]
    if version not in {"2.3", "2.4"}:
        return [
            _f(
                "warning",
                "dovecot-version-unsupported",
                None,
                f"Dovecot {version} is installed ({source}); nsprov speaks the 2.3 and 2.4 "
                "userdb dialects only",
                "Run Dovecot 2.3 or 2.4.",
            )
        ]
    if version != config.dialect:
        return [
            _f(
                "error",
                "dialect-mismatch",
                "[dovecot] version",
                f"Dovecot {version} is installed ({source}), but [dovecot] version = "
                f'"{config.dialect}": nsprov post-login then exports no namespaces (the other '
                "dialect would break every session)",
                f'Set version = "{version}" under [dovecot] (names, prefixes and index '
                "directories stay the same).",
            )
        ]
    return []


def _storage_separator(conf: DovecotConf, ns: ConfSection | None) -> str | None:
    """The separator Dovecot uses when a namespace sets none: ``.`` for Maildir++, else ``/``."""
    get = ns.get if ns is not None else (lambda _k, d="": d)
    location = get("location") or get("mail") or conf.setting("mail_location")
    if location:
        driver, _, rest = location.partition(":")
        return "." if driver == "maildir" and "layout=fs" not in rest.lower() else "/"
    driver = get("mail_driver") or conf.setting("mail_driver")
    if driver:
        layout = get("mailbox_list_layout") or conf.setting("mailbox_list_layout")
        return "." if driver == "maildir" and layout in {"", "maildir++"} else "/"
    return None


def check_separator(config: Config, conf: DovecotConf) -> list[Finding]:
    """Every listed Dovecot namespace must use nsprov's separator."""
    if not config.spools or all(s.list == "no" for s in config.spools):
        return []
    out = []
    namespaces: list[ConfSection | None] = [
        ns
        for ns in conf.namespaces
        if ns.get("list", "yes") != "no" and not _yes(ns.get("disabled"))
    ]
    if not conf.namespaces:
        namespaces = [None]  # Dovecot's implicit INBOX namespace
    for ns in namespaces:
        explicit = ns.get("separator") if ns is not None else ""
        separator = explicit or _storage_separator(conf, ns)
        if separator is None or separator == config.separator:
            continue
        name = ns.name if ns is not None else "(implicit)"
        out.append(
            _f(
                "error",
                "separator-mismatch",
                f"namespace {name}",
                f"namespace {name} uses separator {separator!r}"
                + ("" if explicit else " (the mail storage's default)")
                + f", nsprov's spools {config.separator!r}: Dovecot fails every session that "
                "gets a shared namespace ('All list=yes namespaces must use the same separator')",
                f"Set separator = {config.separator} in namespace {name} {{}} of dovecot.conf "
                "(clients then see the folder hierarchy with it), or set separator = "
                f'"{separator}" in nsprov\'s configuration.',
            )
        )
    return out


def _ns_root(ns: ConfSection) -> str | None:
    from .._location import MailLocation  # noqa: PLC0415

    if path := ns.get("mail_path"):
        return os.path.normpath(path)
    location = ns.get("location") or ns.get("mail")
    if not location:
        return None
    try:
        return os.path.normpath(MailLocation.parse(location).root)
    except NsprovError:
        return None


def check_conf_namespaces(
    config: Config, conf: DovecotConf, scans: Sequence[SpoolScan]
) -> list[Finding]:
    """Dovecot namespaces whose names or prefixes collide with, or overlap, nsprov's."""
    served = [s for scan in scans for s in scan.served]
    prefixes = {s.namespace.prefix: s for s in served}
    folded = {p.casefold(): s for p, s in prefixes.items()}
    names = {s.namespace.name.lower(): s for s in served}
    out = []
    for ns in conf.namespaces:
        prefix = ns.get("prefix")
        subject = f"namespace {ns.name}"
        if (hit := names.get(ns.name.lower())) is not None:
            out.append(
                _f(
                    "error",
                    "namespace-collision",
                    subject,
                    f"namespace {ns.name} in dovecot.conf has the name nsprov gives "
                    f"{_show(hit.path)}: on 2.3 nsprov's fields would modify it",
                    f'Rename namespace {ns.name}, or add "{ns.name}" to [dovecot] reserved_names.',
                )
            )
        if (hit := prefixes.get(prefix)) is not None and prefix not in config.config_prefixes:
            out.append(
                _f(
                    "error",
                    "namespace-collision",
                    subject,
                    f"namespace {ns.name} in dovecot.conf has the prefix {prefix!r}, which "
                    f"nsprov gives {_show(hit.path)}: sessions that get it fail with "
                    "'Duplicate namespace prefix'",
                    f'Add "{prefix}" to [dovecot] config_prefixes (nsprov then skips that '
                    "entry), or change one of the prefixes.",
                )
            )
        elif (
            prefix and (hit := folded.get(prefix.casefold())) is not None and prefix not in prefixes
        ):
            out.append(
                _f(
                    "warning",
                    "case-collision",
                    subject,
                    f"namespace {ns.name}'s prefix {prefix!r} and nsprov's {hit.namespace.prefix!r} "
                    "differ only in case",
                    "Change one of the prefixes.",
                )
            )
        inner = [p for p in prefixes if prefix and p != prefix and p.startswith(prefix)]
        if inner:
            out.append(
                _f(
                    "warning",
                    "namespace-nested",
                    subject,
                    f"namespace {ns.name} (prefix {prefix!r}) contains {len(inner)} of nsprov's "
                    f"prefixes, e.g. {inner[0]!r}: its own mailboxes of those names are hidden",
                    f"Remove namespace {ns.name} if nsprov now serves these mailboxes, or give "
                    "nsprov another prefix.",
                )
            )
        root = _ns_root(ns)
        spools = [s.path for s in config.spools if root is not None and _inside(root, s.path)]
        if spools:
            out.append(
                _f(
                    "warning",
                    "namespace-nested",
                    subject,
                    f"namespace {ns.name} already serves {root}, inside nsprov's spool "
                    f"{spools[0]}, to every user: those mailboxes show twice, and to users the "
                    "file system would not give them",
                    f"Remove namespace {ns.name} from dovecot.conf once nsprov serves the spool.",
                )
            )
    if any(s.subscribe for s in config.spools) and not any(
        ns.name == config.private_namespace for ns in conf.namespaces
    ):
        out.append(
            _f(
                "warning",
                "private-namespace-missing",
                "[dovecot] private_namespace",
                f"subscribe = true adds entries to namespace {config.private_namespace!r}, which "
                "dovecot.conf does not define: Dovecot ignores them silently",
                "Set [dovecot] private_namespace to the name of the namespace with inbox = yes.",
            )
        )
    return out


def _lead(spool: SpoolConfig) -> str:
    """The fixed start of *spool*'s prefixes: the template rendered up to its first ``{name}``."""
    out = []
    for value, is_field in spool.prefix.parts:
        if is_field and value == "name":
            break
        out.append(spool.separator if is_field else value)
    return "".join(out)


def check_prefix_overlap(config: Config, conf: DovecotConf) -> list[Finding]:
    """Prefix templates against every Dovecot namespace, whatever entries the spools hold now.

    An entry's prefix is the template's fixed start followed by its name.  When that start
    equals the prefix of a private namespace (an empty-prefix ``inbox`` and ``{name}/``,
    allowed with ``allow_private_overlap``), an entry named like a private folder (``Sent``)
    takes the folder over and the client's writes land in the spool: ``private-overlap``.
    Equal to a public or shared namespace's prefix, or a namespace inside the template's
    own space (``Shared/x/`` under ``Shared/{name}/``): ``namespace-nested``.  Prefixes
    nested under a namespace's are reported per entry by :func:`check_conf_namespaces`.
    """
    sections = [ns for ns in conf.namespaces if not _yes(ns.get("disabled"))]
    namespaces = [(ns.name, ns.get("prefix"), ns.get("type") or "private") for ns in sections]
    if not conf.namespaces:
        namespaces = [("(implicit)", "", "private")]  # Dovecot's implicit INBOX namespace
    out: list[Finding] = []
    for number, spool in enumerate(config.spools, 1):
        lead = _lead(spool)
        text = spool.prefix.text
        for name, prefix, kind in namespaces:
            subject = f"spool[{number}].prefix"
            if lead == prefix and kind == "private":
                where = "at the top level" if not prefix else f"directly under {prefix!r}"
                out.append(
                    _f(
                        "error",
                        "private-overlap",
                        subject,
                        f"spool {spool.path}: prefix {text!r} puts each entry {where} of the "
                        f"private namespace {name} (prefix {prefix!r}): an entry named like one "
                        "of the user's folders (Sent, Drafts, Trash) takes that folder over, and "
                        "the client's writes to it (sent mail, drafts) land in the shared spool",
                        f'Start the prefix with fixed text, e.g. prefix = "Shared{{sep}}{{name}}'
                        '{sep}", and remove allow_private_overlap; or give namespace '
                        f"{name} a prefix of its own (e.g. INBOX{spool.separator}).",
                    )
                )
            elif prefix and (lead == prefix or (prefix.startswith(lead) and prefix != lead)):
                inside = lead != prefix
                out.append(
                    _f(
                        "warning",
                        "namespace-nested",
                        subject,
                        f"spool {spool.path}: prefix {text!r} "
                        + (
                            f"can give an entry the prefix of namespace {name} ({prefix!r}) or "
                            "one above it"
                            if inside
                            else f"puts each entry directly under namespace {name} ({prefix!r})"
                        )
                        + ": an entry of a name that namespace also uses hides or clashes with it",
                        "Give the spool and the namespace prefixes that do not nest, e.g. "
                        'prefix = "Shared{sep}{name}{sep}" and another one for the namespace.',
                    )
                )
    return out


def check_mail_driver(config: Config, conf: DovecotConf) -> list[Finding]:
    """``[dovecot] global_mail_driver`` must be dovecot.conf's ``mail_driver`` (2.4)."""
    wanted = config.global_mail_driver
    actual = conf.setting("mail_driver")
    if config.dialect != "2.4" or not wanted or actual == wanted:
        return []
    return [
        _f(
            "error",
            "mail-driver-mismatch",
            "[dovecot] global_mail_driver",
            f'[dovecot] global_mail_driver = "{wanted}" leaves mail_driver out of every '
            f"{wanted} namespace, but dovecot.conf's mail_driver is "
            + (repr(actual) if actual else "not set")
            + f": the shared namespaces would not open as {wanted}",
            "Set global_mail_driver to dovecot.conf's mail_driver, or remove it (each "
            "namespace then names its driver).",
        )
    ]


def check_identity(config: Config, conf: DovecotConf) -> list[Finding]:
    """``[identity]`` must say what Dovecot does about the mail process's groups.

    nsprov computes the mail process's groups from ``first_valid_gid``,
    ``last_valid_gid`` and ``mail_access_groups`` (see :mod:`nsprov._identity`);
    Dovecot takes them from dovecot.conf.  (nsprov has no uid range to drift:
    check reads ``first_valid_uid``/``last_valid_uid`` from doveconf.)
    """
    ident = config.identity
    pairs: list[tuple[str, str, str]] = [
        ("first_valid_gid", str(ident.first_valid_gid), str(conf.first_valid_gid)),
        ("last_valid_gid", str(ident.last_valid_gid), str(conf.last_valid_gid)),
    ]
    ours, theirs = sorted(set(ident.mail_access_groups)), sorted(set(conf.mail_access_groups))
    if ours != theirs:
        pairs.append(("mail_access_groups", repr(ours), repr(theirs)))
    out = []
    for key, mine, dovecot in pairs:
        if mine == dovecot:
            continue
        out.append(
            _f(
                "error",
                "identity-mismatch",
                f"[identity] {key}",
                f"[identity] {key} is {mine}, but Dovecot's {key} is {dovecot}: nsprov "
                "computes other groups than the mail process gets, and offers mailboxes it "
                "cannot open (or leaves out mailboxes it can)",
                f"Set {key} = {dovecot} in [identity] (what doveconf -n prints, or Dovecot's "
                "default when it prints nothing).",
            )
        )
    return out


def check_acl_plugin(config: Config, conf: DovecotConf, *, acl_plugin: bool) -> list[Finding]:
    """``[dovecot] acl_plugin`` against Dovecot's ``mail_plugins`` for IMAP."""
    enabled = "acl" in conf.plugins("imap")
    if enabled and not acl_plugin and config.dialect == "2.4":
        return [
            _f(
                "error",
                "acl-plugin-setting",
                "[dovecot] acl_plugin",
                "Dovecot's ACL plugin is enabled, but [dovecot] acl_plugin = false: on 2.4 the "
                "plugin then refuses every mailbox's own dovecot-acl and every shared mailbox is "
                "NONEXISTENT",
                "Set acl_plugin = true under [dovecot].",
            )
        ]
    if acl_plugin and not enabled:
        return [
            _f(
                "info",
                "acl-plugin-setting",
                "[dovecot] acl_plugin",
                "[dovecot] acl_plugin = true, but the ACL plugin is not in mail_plugins"
                + (
                    ": one more userdb key per namespace for nothing"
                    if config.dialect == "2.4"
                    else ""
                ),
                "Set acl_plugin = false, or enable the plugin.",
            )
        ]
    return []


def acl_required(conf: DovecotConf | None) -> bool:
    """Whether public mailboxes need a ``dovecot-acl`` to be visible at all."""
    return conf is not None and "acl" in conf.plugins("imap") and conf.acl_global is None
