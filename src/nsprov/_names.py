"""Deterministic namespace names for spool entries.

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

SLUG_LENGTH = 5
_B32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 alphabet, lowercase
HASH_LENGTH = 6
_SLUG_TABLE = bytes(
    c if (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39) else (c + 32 if 0x41 <= c <= 0x5A else 0x2D)
    for c in range(256)
)


def slug(raw: bytes, length: int = SLUG_LENGTH) -> str:
    """A short lowercase ``[a-z0-9-]`` rendering of *raw*, for readability only.

    >>> slug(b"Sales Team")
    'sales'
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
    'eczem7'
    """
    digest = blake2b(spool + b"\0" + raw, digest_size=10, person=b"nsprov-name-v1").digest()
    number = int.from_bytes(digest, "big")
    bits = len(digest) * 8
    return "".join(_B32[(number >> (bits - 5 * (i + 1))) & 31] for i in range(length))


def entry_id(spool: bytes, raw: bytes) -> tuple[str, str, str]:
    """``(id, slug, hash)`` of an entry; *id* is ``slug-hash``, or ``hash`` when the slug is empty.

    >>> entry_id(b"/var/spool/mail/Shared", b"sales")
    ('sales-eczem7', 'sales', 'eczem7')
    """
    s = slug(raw)
    h = entry_hash(spool, raw)
    return (f"{s}-{h}" if s else h), s, h
