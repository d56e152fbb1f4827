"""Findings and their codes: every code documented in docs/check.md."""

from __future__ import annotations

import re
from hashlib import blake2b

import pytest

from nsprov._check.findings import CODES, Finding
from nsprov._names import HASH_LENGTH, NAMING_SCHEME, entry_hash

from .support import DOCS


class TestFinding:
    """Findings carry a known code and a valid severity."""

    def test_as_dict(self) -> None:
        """The JSON form has every field."""
        f = Finding(severity="info", code="dot-entry", message="m", fix="x", subject="/s")

        assert {
            "severity": "info",
            "code": "dot-entry",
            "subject": "/s",
            "message": "m",
            "fix": "x",
        } == f.as_dict()

    def test_unknown_code(self) -> None:
        """A code outside CODES is refused."""
        with pytest.raises(ValueError, match="unknown finding code"):
            Finding(severity="info", code="made-up", message="m", fix="x")

    def test_unknown_severity(self) -> None:
        """A severity other than error, warning, info is refused."""
        with pytest.raises(ValueError, match="severity"):
            Finding(severity="fatal", code="dot-entry", message="m", fix="x")  # type: ignore[arg-type]


class TestDocs:
    """docs/check.md documents exactly the codes the check emits."""

    def test_every_code_documented(self) -> None:
        """Each code has a heading with a severity in docs/check.md, and no other code does."""
        text = DOCS.read_text()
        sections = re.split(r"^#### ", text, flags=re.MULTILINE)[1:]
        documented = {}
        for section in sections:
            code = re.match(r"`([a-z0-9-]+)`", section)
            assert code is not None, section[:40]
            severity = re.search(r"\*Severity:\* (error|warning|info)", section)
            assert severity is not None, code.group(1)
            assert "*Fix:*" in section, code.group(1)
            documented[code.group(1)] = severity.group(1)

        assert sorted(CODES) == sorted(documented)

    def test_naming_scheme_is_the_hash_personalisation(self) -> None:
        """NAMING_SCHEME is the BLAKE2b person string of nsprov._names."""
        raw = b"/var/spool/mail/Shared\0sales"
        digest = blake2b(raw, digest_size=10, person=NAMING_SCHEME.encode()).digest()
        number = int.from_bytes(digest, "big")
        alphabet = "abcdefghijklmnopqrstuvwxyz234567"
        expected = "".join(
            alphabet[(number >> (80 - 5 * (i + 1))) & 31] for i in range(HASH_LENGTH)
        )

        assert expected == entry_hash(b"/var/spool/mail/Shared", b"sales")
