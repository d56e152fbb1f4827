from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import nsprov

ROOT = Path(__file__).parent.parent

#: Modules that must never load on the post-login path (imported lazily where needed).
LAZY = {
    "typing",
    "re",
    "enum",
    "argparse",
    "logging",
    "json",
    "pathlib",
    "subprocess",
    "sqlite3",
    "ipaddress",
    "tomllib",
    "importlib.metadata",
    "pathspec",
    "attrs",
    "attr",
}


def test_version_matches_metadata() -> None:
    """nsprov.__version__ is the installed distribution's version, as in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert project["version"] == version("nsprov") == nsprov.__version__


def test_public_surface() -> None:
    """__all__ is sorted and __dir__ reports exactly it."""
    assert sorted(nsprov.__all__) == nsprov.__all__
    assert nsprov.__all__ == dir(nsprov)
    for name in nsprov.__all__:
        assert getattr(nsprov, name) is not None


def test_post_login_imports_stay_light() -> None:
    """The post-login parent imports nothing heavy: attrs, argparse, tomllib … load only in the worker or elsewhere."""
    code = "import sys, nsprov._main, nsprov._postlogin; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], check=True, capture_output=True, text=True
    ).stdout

    assert set() == LAZY & set(out.split())


def test_worker_imports_no_cli_modules() -> None:
    """The worker (namespaces only, no patterns) loads neither argparse, json, pathspec nor SQL."""
    code = (
        "import sys, nsprov._worker, nsprov._engine, nsprov._config, nsprov._identity; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], check=True, capture_output=True, text=True
    ).stdout

    assert set() == {"argparse", "json", "pathspec", "sqlite3", "subprocess", "logging"} & set(
        out.split()
    )


def test_lua_userdb_script_in_wheel() -> None:
    """The installed package carries the Lua userdb script, byte for byte the source tree's."""
    from importlib.resources import files

    installed = files("nsprov") / "lua" / "nsprov-userdb.lua"

    assert (ROOT / "src/nsprov/lua/nsprov-userdb.lua").read_bytes() == installed.read_bytes()
    assert not Path(str(installed)).is_relative_to(ROOT / "src")
