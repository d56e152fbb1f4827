"""Deterministic namespace names for spool entries.

A name is ``s-`` + a 3-character slug + ``-`` + 8 base32 characters (40 bits) of a
hash: at most 14 characters, which is what lets 1,000 namespaces fit the kernel's
128 KiB limit for ``USERDB_KEYS`` on Dovecot 2.3.  Entries whose slugs agree (a
spool of ``box000001`` … ``box100000``) are told apart by the hash alone; 40 bits
keep a collision among 100,000 such names below one in 200 (and a collision is
detected and reported as ``name-collision``, never served twice).

A name depends only on the spool and the entry's raw name bytes, never on the
other entries, so a new mailbox never renames an existing one (whose per-user
index directory is named after it).  ``Case`` and ``case`` are two mailboxes:
their raw bytes differ, so do their hashes.
"""

from __future__ import annotations

try:  # _blake2 alone costs a tenth of hashlib's import (which loads OpenSSL)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - CPython always has it
    from hashlib import blake2b

#: The naming scheme's id, also the BLAKE2b personalisation: a new scheme gets a new id, so
#: ``nsprov check`` can tell per-user directories of another scheme from stale ones.
NAMING_SCHEME = "nsprov-name-v2"
_PERSON = NAMING_SCHEME.encode()
SLUG_LENGTH = 3
_B32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 alphabet, lowercase
HASH_LENGTH = 8
_SLUG_TABLE = bytes(
    c if (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39) else (c + 32 if 0x41 <= c <= 0x5A else 0x2D)
    for c in range(256)
)


def slug(raw: bytes, length: int = SLUG_LENGTH) -> str:
    """A short lowercase ``[a-z0-9-]`` rendering of *raw*, for readability only.

    >>> slug(b"Sales Team")
    'sal'
    >>> slug(b"--")
    ''
    """
    text = raw.translate(_SLUG_TABLE).decode("ascii")
    while "--" in text:
        text = text.replace("--", "-")
    return text.strip("-")[:length].rstrip("-")


def entry_hash(spool: bytes, raw: bytes, length: int = HASH_LENGTH) -> str:
    """A base32 (``[a-z2-7]``) digest of the spool path and the entry's raw name.

    >>> entry_hash(b"/var/spool/mail/Shared", b"sales")
    'wkzjidrw'
    """
    digest = blake2b(spool + b"\0" + raw, digest_size=10, person=_PERSON).digest()
    number = int.from_bytes(digest, "big")
    bits = len(digest) * 8
    return "".join(_B32[(number >> (bits - 5 * (i + 1))) & 31] for i in range(length))


def entry_id(spool: bytes, raw: bytes) -> tuple[str, str, str]:
    """``(id, slug, hash)`` of an entry; *id* is ``slug-hash``, or ``hash`` when the slug is empty.

    >>> entry_id(b"/var/spool/mail/Shared", b"sales")
    ('sal-wkzjidrw', 'sal', 'wkzjidrw')
    """
    s = slug(raw)
    h = entry_hash(spool, raw)
    return (f"{s}-{h}" if s else h), s, h
