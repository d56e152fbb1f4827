"""Pages read on a terminal (the README, the docs the package installs) link in plain Markdown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r"\{(doc|ref|term|py:[a-z]+|func|class|mod)\}`")


def test_readme_has_no_myst_roles() -> None:
    """README.md has no MyST role, which a terminal or a forge would show raw."""
    assert [] == ROLE.findall((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", ["configuration", "check", "dovecot", "troubleshooting"])
def test_operator_pages_link_pages_plainly(page: str) -> None:
    """The operator's pages link other pages as [Title](page.md), not {doc}`page`."""
    text = (ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8")
    assert "{doc}`" not in text
