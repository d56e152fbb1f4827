"""Why the kernel grants or refuses an access: the entry that decided, in words.

Pure functions over the values :mod:`nsprov._access` evaluates (a file's mode,
owner, group and POSIX ACL; an identity's uid and groups).  ``check`` and
``show`` use them to say which owner and mode bits, or which ACL entry and
mask, blocked a reader, so that the fix is plain.

>>> from nsprov._access import Acl, Facts, Ident
>>> explain(Facts(0o40750, 0, 100), Ident(1000, 1000), 5, gid_name={100: "sales"}.get)
'other bits --- of mode 0750 (not the owner 0, not in group sales); needs r-x'
>>> acl = Acl(7, 5, 0, mask=4, users=((1000, 5),))
>>> explain(Facts(0o40740, 0, 100, acl), Ident(1000, 1000), 5)
'ACL entry user:1000:r-x limited by mask r-- gives r--; needs r-x'
"""

from __future__ import annotations

from ._access import ALLOWED, GROUP, NAMED_USER, OTHER, OWNER, check

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._access import FactsLike, IdentLike


def rwx(bits: int) -> str:
    """``r-x`` for 5."""
    return "".join(c if bits & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))


def _name(lookup: Callable[[int], str | None] | None, number: int) -> str:
    name = lookup(number) if lookup is not None else None
    return name if name is not None else str(number)


def explain(
    facts: FactsLike,
    ident: IdentLike,
    want: int,
    *,
    uid_name: Callable[[int], str | None] | None = None,
    gid_name: Callable[[int], str | None] | None = None,
) -> str:
    """Which class decided *ident*'s access *want* (4 r, 2 w, 1 x) on *facts*, and its bits.

    The same rules as :func:`nsprov._access.check`: the owner's bits, a named
    user entry limited by the mask, the owning group and named group entries
    (limited by the mask; an empty mask means the ACL is not consulted), or
    the other bits.  Ends with ``; needs <bits>`` when access is refused.
    """
    code = check(facts, ident, want)
    via = code & ~ALLOWED
    mode = f"mode {facts.mode & 0o7777:04o}"
    owner = _name(uid_name, facts.uid)
    group = _name(gid_name, facts.gid)
    acl = facts.acl
    if via == OWNER:
        bits = acl.user_obj if acl is not None else (facts.mode >> 6) & 7
        text = f"owner {owner} gets {rwx(bits)} ({mode})"
    elif via == NAMED_USER and acl is not None:
        perm = next(p for u, p in acl.users if u == ident.uid)
        mask = acl.mask or 0
        text = (
            f"ACL entry user:{_name(uid_name, ident.uid)}:{rwx(perm)} limited by mask "
            f"{rwx(mask)} gives {rwx(perm & mask)}"
        )
    elif via == GROUP:
        text = _group_text(facts, ident, mode, group, gid_name)
    elif via == OTHER:
        who = f"not the owner {owner}, not in group {group}"
        if acl is None:
            text = f"other bits {rwx(facts.mode & 7)} of {mode} ({who})"
        else:
            named = ", no ACL entry names it" if acl.mask else ""
            text = f"ACL other::{rwx(acl.other)} ({mode}; {who}{named})"
    else:  # pragma: no cover - check() returns no other code
        text = f"{mode}"
    return text if code & ALLOWED else f"{text}; needs {rwx(want)}"


def _group_text(
    facts: FactsLike,
    ident: IdentLike,
    mode: str,
    group: str,
    gid_name: Callable[[int], str | None] | None,
) -> str:
    acl = facts.acl
    member = facts.gid == ident.gid or facts.gid in ident.groups
    if acl is None:
        return f"group {group} gets {rwx((facts.mode >> 3) & 7)} ({mode})"
    if acl.mask is None:
        return f"ACL group::{rwx(acl.group_obj)} (group {group}, {mode})"
    if not acl.mask:
        return f"ACL mask --- ({mode}): group {group} and every ACL entry get nothing"
    entries = [f"group::{rwx(acl.group_obj)} (group {group})"] if member else []
    entries += [
        f"group:{_name(gid_name, g)}:{rwx(p)}"
        for g, p in acl.groups
        if g == ident.gid or g in ident.groups
    ]
    return f"ACL {', '.join(entries)} limited by mask {rwx(acl.mask)}"
