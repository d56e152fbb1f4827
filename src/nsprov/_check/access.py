"""The spools' permissions: who may write or read each mailbox, the path to it, dot files."""

from __future__ import annotations

import os
import stat as st
from typing import TYPE_CHECKING

from .._access import ALLOWED, Ident, check
from .._scan import DEFAULT_FS, Fs, Served, _components
from .._why import explain
from .findings import Finding, _f, _n, _rwx, _show, _some
from .structure import _OTHER, SpoolScan

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .._access import IdentLike
    from .._identity import MailUser
    from .._perms import FileFacts

#: A uid and gid no real account has, for evaluating "a member of group G" or "user U" alone.
_NOBODY = 0xFFFFFFFD
_RX = 5


def _writers(
    facts: FileFacts, gid_name: Callable[[int], str], uid_name: Callable[[int], str]
) -> list[str]:
    """Who besides the owner may write: the owning group, named ACL entries, everybody."""
    acl = facts.acl
    out = []
    if acl is None or acl.mask is None:
        group = acl.group_obj if acl is not None else (facts.mode >> 3) & 7
        if group & 2:
            out.append(f"group {gid_name(facts.gid)}")
    else:
        mask = acl.mask
        if acl.group_obj & mask & 2:
            out.append(f"group {gid_name(facts.gid)}")
        out += [f"ACL user:{uid_name(u)}" for u, perm in acl.users if perm & mask & 2]
        out += [f"ACL group:{gid_name(g)}" for g, perm in acl.groups if perm & mask & 2]
    if facts.mode & 0o002:
        out.append("everybody (other)")
    return out


def _named_readers(
    facts: FileFacts, gid_name: Callable[[int], str], uid_name: Callable[[int], str]
) -> list[str]:
    acl = facts.acl
    if acl is None or not acl.mask:
        return []
    mask = acl.mask
    out = [f"ACL user:{uid_name(u)}" for u, perm in acl.users if perm & mask & 5 == 5]
    out += [f"ACL group:{gid_name(g)}" for g, perm in acl.groups if perm & mask & 5 == 5]
    return out


def acl_grants(text: str) -> bool:
    """Whether a ``dovecot-acl`` file grants lookup (``l``) to anybody a public namespace has.

    Public namespaces have no owner, so ``owner`` entries grant nothing; negative
    rights (``-l``) grant nothing either.
    """
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        ident, _, rest = line.partition(" ")
        rights = rest.strip().split(":", 1)[0].strip()
        if ident != "owner" and not rights.startswith("-") and "l" in rights:
            return True
    return False


def _user_names(users: Iterable[MailUser]) -> list[str]:
    return sorted(u.user for u in users)


def check_mailboxes(
    scans: Sequence[SpoolScan],
    *,
    fs: Fs = DEFAULT_FS,
    access: Mapping[tuple[str, bytes], Sequence[MailUser]] | None = None,
    stat_dirs: bool | None = None,
    acl_required: bool = False,
    uid_name: Callable[[int], str] = str,
    gid_name: Callable[[int], str] = str,
) -> list[Finding]:
    """Permission findings for every servable mailbox and spool root.

    *access* maps ``(spool, raw name)`` to the checked users who get that
    mailbox (None: no users were checked); *stat_dirs* is Dovecot's
    ``maildir_stat_dirs`` (None: unknown); with *acl_required* (the ACL plugin
    is on and no global ACLs are configured), mailboxes without a
    ``dovecot-acl`` that grants lookup are reported.
    """
    out: list[Finding] = []
    for scan in scans:
        if scan.real is not None and scan.error is None:
            out += _spool_permissions(
                scan,
                scan.real,
                fs=fs,
                access=access,
                stat_dirs=stat_dirs,
                acl_required=acl_required,
                uid_name=uid_name,
                gid_name=gid_name,
            )
    return out


def _spool_permissions(
    scan: SpoolScan,
    real: bytes,
    *,
    fs: Fs,
    access: Mapping[tuple[str, bytes], Sequence[MailUser]] | None,
    stat_dirs: bool | None,
    acl_required: bool,
    uid_name: Callable[[int], str],
    gid_name: Callable[[int], str],
) -> list[Finding]:
    """The findings of :func:`check_mailboxes` for one listed spool (*real*: its real path)."""
    spool = scan.spool
    out: list[Finding] = []
    try:
        _, facts = fs.facts(real)
    except OSError:
        return out
    if writers := _writers(facts, gid_name, uid_name):
        out.append(
            _f(
                "warning",
                "spool-writable",
                spool.path,
                f"spool {spool.path} can be written by {', '.join(writers)}: they can create "
                "mailboxes that other users are then offered, with modes they choose",
                f"Let only the administrator create mailboxes: chmod go-w {spool.path} and "
                "remove write ACL entries (setfacl -x …).",
            )
        )
    writable: list[str] = []
    missing_acl: list[str] = []
    for s in scan.served:
        path_b = os.fsencode(s.path)
        path = _show(s.path)
        try:
            stat, facts = fs.facts(path_b)
        except OSError:
            continue
        if who := _writers(facts, gid_name, uid_name):
            writable.append(f"{s.entry} ({', '.join(who)})")
        partial = _partial_grants(fs, path_b, facts, uid_name, gid_name)
        if partial:
            out.append(_partial_finding(path, partial))
        out += _chgrp_trap(s, path, stat, facts, access, uid_name, gid_name, partial=partial)
        if stat_dirs is not True:
            out += _dot_files(fs, path_b, path, known=stat_dirs is False)
        if acl_required:
            try:
                text = fs.read_text(path_b + b"/dovecot-acl")
            except OSError:
                text = None
            if text is None or not acl_grants(text):
                missing_acl.append(s.entry)
    return out + _spool_summary(scan, writable, missing_acl)


def _spool_summary(
    scan: SpoolScan, writable: Sequence[str], missing_acl: Sequence[str]
) -> list[Finding]:
    """The spool's writable mailboxes, control directory and missing ACLs, summed up."""
    spool = scan.spool
    out: list[Finding] = []
    if writable:
        out.append(
            _f(
                "warning",
                "mailbox-writable",
                spool.path,
                f"{_n(len(writable), 'mailbox', 'mailboxes')} of {spool.path} can be written by users other "
                f"than their owner: {_some(writable)}; those users can add folders and "
                "files every reader sees",
                "If readers are not meant to change shared mail, remove write access "
                "(chmod go-w, setfacl -x); if they are, keep per-user index and control "
                "directories (the defaults) so Dovecot's own files stay out of the spool.",
            )
        )
    if spool.control is None and scan.served:
        out.append(
            _f(
                "error" if writable else "warning",
                "control-in-spool",
                spool.path,
                f'spool {spool.path} has control = "": Dovecot keeps dovecot-uidlist and '
                "dovecot-keywords in each mailbox, "
                + (
                    "and writes them into the shared tree as whichever user logs in"
                    if writable
                    else "and cannot write them into these read-only mailboxes (errors, "
                    "mail that does not show)"
                ),
                'Remove control = "" so every user gets CONTROL={home}/.nsprov/{ns} (the default).',
            )
        )
    if missing_acl:
        out.append(
            _f(
                "warning",
                "acl-no-grants",
                spool.path,
                f"Dovecot's ACL plugin is enabled and no global ACLs are configured, but "
                f"{len(missing_acl)} of {len(scan.served)} mailboxes of {spool.path} have "
                f"no dovecot-acl granting lookup: {_some(missing_acl)}; users get the "
                "namespaces but see no mailbox in them",
                "Put a dovecot-acl file in each mailbox directory, e.g. 'anyone lr' or "
                "'group=sales lrwstipe' (public namespaces have no owner: 'owner' grants "
                "nothing), or configure global ACLs; or disable the acl plugin if the file "
                "system alone decides.",
            )
        )
    return out


def _principals(
    facts: FileFacts, uid_name: Callable[[int], str], gid_name: Callable[[int], str]
) -> list[tuple[str, IdentLike]]:
    """Who a directory's mode and ACL name, each as an identity that is only that principal."""
    out: list[tuple[str, IdentLike]] = [(f"group {gid_name(facts.gid)}", Ident(_NOBODY, facts.gid))]
    acl = facts.acl
    if acl is not None and acl.mask:
        out += [(f"ACL user:{uid_name(u)}", Ident(u, _NOBODY)) for u, _ in acl.users]
        out += [(f"ACL group:{gid_name(g)}", Ident(_NOBODY, g)) for g, _ in acl.groups]
    out.append(("everybody (other)", _OTHER))
    return out


def _partial_grants(
    fs: Fs,
    path_b: bytes,
    facts: FileFacts,
    uid_name: Callable[[int], str],
    gid_name: Callable[[int], str],
) -> dict[str, str]:
    """The principals granted read and search on a mailbox but not on its ``cur`` or ``new``.

    Maps each principal (``ACL group:sales``, ``group staff``, ``everybody (other)``) to
    what blocks it below (:func:`nsprov._why.explain`).
    """
    children = []
    for child in ("cur", "new"):
        try:
            _, child_facts = fs.facts(path_b + b"/" + child.encode())
        except OSError:
            return {}  # not a maildir, or gone: other findings say so
        children.append((child, child_facts))
    out = {}
    for label, ident in _principals(facts, uid_name, gid_name):
        if not check(facts, ident, _RX) & ALLOWED:
            continue
        for child, child_facts in children:
            if not check(child_facts, ident, _RX) & ALLOWED:
                why = explain(child_facts, ident, _RX, uid_name=uid_name, gid_name=gid_name)
                out[label] = f"{child}: {why}"
                break
    return out


def _partial_finding(path: str, partial: Mapping[str, str]) -> Finding:
    who = [f"{label} ({why})" for label, why in partial.items()]
    names = list(partial)
    return _f(
        "warning",
        "partial-grant",
        path,
        f"{path} grants read and search to {_some(names)}, but its cur or new does not: "
        f"{_some(who)}; nsprov serves the mailbox only to whom may read all three, so these "
        "readers get nothing",
        "Grant the same on cur and new (e.g. setfacl -m g:GROUP:rx DIR/cur DIR/new, and "
        "setfacl -d -m g:GROUP:rx DIR so new subdirectories inherit it; or chmod the "
        "same bits), or revoke it on the directory if it was not meant.",
    )


def _chgrp_trap(
    s: Served,
    path: str,
    stat: os.stat_result,
    facts: FileFacts,
    access: Mapping[tuple[str, bytes], Sequence[MailUser]] | None,
    uid_name: Callable[[int], str],
    gid_name: Callable[[int], str],
    *,
    partial: Mapping[str, str] | None = None,
) -> list[Finding]:
    group_bits = (stat.st_mode >> 3) & 7
    other_bits = stat.st_mode & 7
    if group_bits == other_bits:
        return []
    users = access.get((s.spool, s.raw), ()) if access is not None else ()
    trapped = _user_names(u for u in users if not u.identity.in_group(facts.gid))
    readers = [f"{'user' if len(trapped) == 1 else 'users'} {_some(trapped)}"] if trapped else []
    # Only who may read the whole mailbox: a half-applied grant is partial-grant, not access.
    partial = partial or {}
    named = [r for r in _named_readers(facts, gid_name, uid_name) if r not in partial]
    readers += named
    if other_bits & 5 == 5 and not trapped and "everybody (other)" not in partial:
        readers.append("everybody outside the group (other bits)")
    if not readers:
        return []
    group = gid_name(facts.gid)
    return [
        _f(
            "warning",
            "chgrp-trap",
            path,
            f"{path}: group bits {_rwx(group_bits)} differ from other bits {_rwx(other_bits)} "
            f"(mode {stat.st_mode & 0o7777:04o}, group {group}), and {'; '.join(readers)} read "
            "it without being in that group: Dovecot gives new index files the mailbox's group "
            "and logs 'fchown(…) failed: Operation not permitted … see wiki ChgrpNoPerm'; "
            "nsprov pre-creates each user's index directory, so SELECT works, but the errors "
            "stay",
            (
                "Give the readers a group they all share and make it the directory's group "
                f"(chgrp GROUP {path}), instead of the ACL entries: with ACL entries the group "
                "bits are the ACL mask, and lowering them to the other bits would revoke the "
                "entries."
                if named and other_bits & 5 != 5
                else "Make the group bits equal the other bits (chmod "
                f"g={_rwx(other_bits).replace('-', '')} {path}), or make every reader a member "
                "of the directory's group."
            ),
        )
    ]


def _dot_files(fs: Fs, path_b: bytes, path: str, *, known: bool) -> list[Finding]:
    try:
        names = sorted(fs.listdir(path_b))
    except OSError:
        return []
    dots = []
    for name in names:
        if not name.startswith(b".") or name in {b".", b".."}:
            continue
        try:
            if st.S_ISDIR(fs.lstat(path_b + b"/" + name).st_mode):
                continue
        except OSError:
            continue
        dots.append(_show(name))
    if not dots:
        return []
    condition = "with maildir_stat_dirs = no" if known else "unless maildir_stat_dirs = yes"
    return [
        _f(
            "warning",
            "dot-file-in-mailbox",
            path,
            f"{path} has dot files ({_some(dots)}): {condition}, Dovecot lists each as a folder "
            "that cannot be opened",
            "Remove or move the files, or set maildir_stat_dirs = yes in dovecot.conf (LIST then "
            "shows only real directories).",
        )
    ]


def check_traversal(
    scans: Sequence[SpoolScan], *, fs: Fs = DEFAULT_FS, users: Sequence[MailUser] = ()
) -> list[Finding]:
    """Spools that no checked user (or, without users, nobody outside the groups) can reach."""
    from .._scan import _searchable  # noqa: PLC0415

    out: list[Finding] = []
    for scan in scans:
        if scan.real is None or scan.error is not None:
            continue
        dirs = _components(scan.real)
        try:
            if users:
                why = [_searchable(fs, dirs, u.identity) for u in users]
                if all(w is not None for w in why):
                    out.append(
                        _f(
                            "error",
                            "spool-not-traversable",
                            scan.spool.path,
                            f"none of the {len(users)} checked users can reach spool "
                            f"{scan.spool.path}: {why[0]}",
                            "Grant search (x) on the directory named to the readers: chmod o+x "
                            "DIR, or setfacl -m g:GROUP:x DIR.",
                        )
                    )
            elif (reason := _searchable(fs, dirs, _OTHER)) is not None:
                out.append(
                    _f(
                        "warning",
                        "spool-not-traversable",
                        scan.spool.path,
                        f"users outside the owning groups cannot reach spool {scan.spool.path}: "
                        f"{reason}",
                        "Nothing to do if only members of those groups are meant to read; "
                        "otherwise chmod o+x DIR on the directory named.",
                    )
                )
        except OSError as e:
            out.append(
                _f(
                    "error",
                    "spool-missing",
                    scan.spool.path,
                    f"spool {scan.spool.path}: {e.strerror or e}",
                    "Make the spool and the directories above it exist and be readable.",
                )
            )
    return out


def blocked(
    fs: Fs,
    path: bytes,
    ident: IdentLike,
    *,
    uid_name: Callable[[int], str] = str,
    gid_name: Callable[[int], str] = str,
) -> str | None:
    """What refuses *ident* read and search on the mailbox at *path*, its ``cur`` or ``new``.

    ``cur: other bits --- of mode 0750 (…); needs r-x``, or None when nothing there does
    (then a directory above it, or a check outside the mode bits, refuses).
    """
    for child in (b"", b"/cur", b"/new"):
        try:
            _, facts = fs.facts(path + child)
        except OSError:
            continue
        if not check(facts, ident, _RX) & ALLOWED:
            why = explain(facts, ident, _RX, uid_name=uid_name, gid_name=gid_name)
            return f"{child.decode()[1:] or 'the directory'}: {why}"
    return None


def no_access_findings(
    scans: Sequence[SpoolScan],
    access: Mapping[tuple[str, bytes], Sequence[MailUser]],
    checked: int,
    *,
    unreachable: Iterable[str] = (),
    fs: Fs | None = None,
    users: Sequence[MailUser] = (),
    uid_name: Callable[[int], str] = str,
    gid_name: Callable[[int], str] = str,
) -> list[Finding]:
    """Servable entries none of the *checked* users gets (spools in *unreachable* aside).

    With *fs* and *users*, each entry names what blocked the first of *users*
    (:func:`blocked`).
    """
    out = []
    skip = set(unreachable)
    first = users[0] if users else None
    for scan in scans:
        if scan.spool.path in skip:
            continue
        nobody = []
        for s in scan.served:
            if access.get((s.spool, s.raw)):
                continue
            why = None
            if fs is not None and first is not None:
                why = blocked(
                    fs,
                    os.fsencode(s.path),
                    first.identity,
                    uid_name=uid_name,
                    gid_name=gid_name,
                )
            nobody.append(f"{s.entry} ({first.user if first else ''}: {why})" if why else s.entry)
        if nobody:
            out.append(
                _f(
                    "info",
                    "no-access",
                    scan.spool.path,
                    f"{_n(len(nobody), 'mailbox', 'mailboxes')} of {scan.spool.path} {'is' if len(nobody) == 1 else 'are'} served to none of the "
                    f"{checked} checked users: {_some(nobody)}",
                    "Nothing to do if intended (nsprov serves what a user's mail process may "
                    "read); otherwise grant read and search on the directory, its cur and new "
                    "(chmod, chgrp, or setfacl -m u:USER:rx).",
                )
            )
    return out
