"""The ``nsprov`` dispatcher: usage, version, the commands it hands on, argparse's place."""

from __future__ import annotations

from pathlib import Path

import pytest

from nsprov._cli import main


class TestDispatch:
    """main() parses only the top level and hands each command to its front end."""

    def test_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Usage errors exit 2."""
        with pytest.raises(SystemExit) as info:
            main(["show"])
        assert 2 == info.value.code
        assert 2 == main([])
        capsys.readouterr()

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--version prints the package version."""
        assert 0 == main(["--version"])
        assert capsys.readouterr().out.startswith("nsprov 0.")

    def test_post_login_dispatch(self, capsys: pytest.CaptureFixture[str]) -> None:
        """main() hands post-login to the hot-path module."""
        assert 2 == main(["post-login"], environ={})
        assert "usage: nsprov post-login" in capsys.readouterr().err


def test_no_argparse_outside_cli() -> None:
    """Argument parsing lives in the command-line package (and, until their wings move it, check and serve)."""
    import ast

    import nsprov

    root = Path(nsprov.__file__).parent
    users = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if "argparse" in names:
                users.add(path.relative_to(root).parts[0].removesuffix(".py"))

    assert "_cli" in users
    assert set() == users - {"_cli", "_check", "_serve"}
