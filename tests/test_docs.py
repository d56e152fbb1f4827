"""The documentation's configuration and Python examples are valid as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from nsprov._config import config_from_mapping

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[tuple[str, str]]:
    return [
        (f"{page.name}:{text[: m.start()].count(chr(10)) + 1}", m.group(2))
        for page in PAGES
        for text in [page.read_text()]
        for m in BLOCK.finditer(text)
        if m.group(1) == language
    ]


@pytest.mark.parametrize(("where", "text"), blocks("toml"))
def test_toml_examples_parse(where: str, text: str) -> None:
    """Every TOML block in the docs is valid TOML."""
    assert isinstance(tomllib.loads(text), dict), where


@pytest.mark.parametrize(
    "page", [p for p in PAGES if "```toml" in p.read_text()], ids=lambda p: p.name
)
def test_toml_examples_together_are_a_valid_config(page: Path) -> None:
    """The TOML blocks of a page, together, form a valid nsprov configuration."""
    text = "\n".join(t for w, t in blocks("toml") if w.startswith(page.name + ":"))
    data = tomllib.loads(text)
    data.setdefault("spool", [{"path": "/var/spool/mail/Shared"}])

    config = config_from_mapping(data, source=page.name)

    assert page.name == config.source


@pytest.mark.parametrize(("where", "text"), blocks("python"))
def test_python_examples_compile(where: str, text: str) -> None:
    """Every Python block in the docs compiles."""
    compile(text, where, "exec")


def test_there_are_examples() -> None:
    """The docs have TOML and Python examples to check."""
    assert len(blocks("toml")) >= 5
    assert len(blocks("python")) >= 2


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples").rglob("*.toml")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_example_configs_are_valid(path: Path) -> None:
    """Every shipped example configuration loads without a problem."""
    data = tomllib.loads(path.read_text())

    config = config_from_mapping(data, source=path.name)

    config.check_does_something()


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_lua_wiring_documented(version: str) -> None:
    """docs/serve.md shows the Lua userdb blocks the live tests run (tests/live/luaroute.py)."""
    from .live.luaroute import documented_userdb

    text = (ROOT / "docs" / "serve.md").read_text()
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    documented = [body for language, body in fenced if not language]

    assert documented_userdb(version) in documented
