from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import nsprov

if TYPE_CHECKING:
    from collections.abc import Iterator

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


#: The installed ``nsprov`` command, beside this interpreter: the direct launcher that
#: ``nsprov install-launcher`` wrote (dev/_bootstrap.sh runs it after installing the wheel).
NSPROV = Path(sys.executable).with_name("nsprov")


@pytest.fixture(name="bash_launcher", scope="module")
def _bash_launcher() -> Iterator[Path]:
    """The wheel's bash launcher (``scripts/nsprov``), beside this interpreter as the wheel puts it."""
    path = NSPROV.with_name(f"nsprov-bash-test-{os.getpid()}")
    path.write_text((ROOT / "scripts" / "nsprov").read_text())
    path.chmod(0o755)
    try:
        yield path
    finally:
        path.unlink()


def _plant(where: Path, marker: Path) -> dict[str, str]:
    """Code that appends to *marker* when run, reachable through every variable a login could set.

    The keys are environment variables (userdb fields, uppercased by Dovecot): Python's,
    bash's start-up files and functions, and a ``PATH`` whose ``readlink`` and ``python``
    are planted too.  A planted ``nsprov`` package sits in the current directory.
    """
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("sitecustomize", "usercustomize"):
        (where / f"{name}.py").write_text(code)
    (where / "startup.py").write_text(code)
    (where / "nsprov").mkdir()
    (where / "nsprov" / "__init__.py").write_text(code)
    shell = where / "bash_env.sh"
    shell.write_text(f"echo bash_env >> {marker}\n")
    evil = where / "evil-bin"
    evil.mkdir()
    for program in ("readlink", "python", "python3", "bash", "sh"):
        (evil / program).write_text(f"#!/bin/sh\necho {program} >> {marker}\n")
        (evil / program).chmod(0o755)
    return {
        "PYTHONPATH": str(where),
        "PYTHONSTARTUP": str(where / "startup.py"),
        "PYTHONINSPECT": "1",
        "PYTHONHOME": str(where),
        "PYTHONUSERBASE": str(where),
        "BASH_ENV": str(shell),
        "ENV": str(shell),
        "SHELLOPTS": "xtrace",
        "BASH_FUNC_readlink%%": f"() {{ echo function >> {marker}; }}",
        "PATH": str(evil),
    }


class TestLauncher:
    """The nsprov command starts Python isolated and leaves the login's environment as it found it."""

    def test_is_the_direct_launcher(self) -> None:
        """The installed command is the direct launcher: Python itself, started -IS, no shell."""
        from nsprov._launcher import MARK

        first, second = NSPROV.read_text().splitlines()[:2]
        assert (f"#!{sys.executable} -IS", MARK) == (first, second.split(" (")[0]), (
            "run nsprov install-launcher (dev/_bootstrap.sh does)"
        )

    def test_wheel_ships_bash_launcher(self, bash_launcher: Path) -> None:
        """The wheel's command is the bash launcher, not a console script (which cannot pass -I)."""
        assert "#!/bin/bash -p" == bash_launcher.read_text().splitlines()[0]

    @pytest.mark.parametrize("kind", ["bash", "direct"])
    def test_planted_code_never_runs(self, tmp_path: Path, bash_launcher: Path, kind: str) -> None:
        """Run through a symlink, as root would from a login: nothing planted runs, the environment passes unchanged."""
        marker = tmp_path / "ran"
        plant = tmp_path / "plant"
        plant.mkdir()
        link = tmp_path / "bin" / "nsprov"
        link.parent.mkdir()
        link.symlink_to(bash_launcher if kind == "bash" else NSPROV)
        env = {
            "USER": "alice",
            "NAMESPACE+": "s-a",
            "NAMESPACE/S-A/PREFIX": "Shared/a/",
            "USERDB_KEYS": "NAMESPACE+ NAMESPACE/S-A/PREFIX ",
            **_plant(plant, marker),
        }
        argv = [
            str(link),
            "post-login",
            f"--config={tmp_path}/absent.toml",
            "--",
            "/usr/bin/env",
            "-0",
        ]

        proc = subprocess.run(argv, cwd=plant, env=env, capture_output=True, check=False)

        passed = dict(item.partition("=")[::2] for item in proc.stdout.decode().split("\0") if item)
        if kind == "bash":
            # bash exports its own SHELLOPTS once the variable exists (no userdb has such a field).
            shellopts = passed.pop("SHELLOPTS")
            assert "xtrace" not in shellopts
            env.pop("SHELLOPTS")
        assert (0, env) == (proc.returncode, passed)
        assert not marker.exists(), marker.read_text()
        assert 1 == proc.stderr.count(b"\n"), proc.stderr  # the one line: no config

    @pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
    def test_post_login_skips_site(self, tmp_path: Path, bash_launcher: Path) -> None:
        """post-login starts Python with -I -S (no .pth files, no site-packages listing); others with -I."""
        trace = tmp_path / "trace"

        def python_flags(*argv: str) -> list[str]:
            subprocess.run(
                [
                    "strace",
                    "-f",
                    "-qq",
                    "-e",
                    "trace=execve",
                    "-o",
                    str(trace),
                    str(bash_launcher),
                    *argv,
                ],
                env={"USER": "alice", "USERDB_KEYS": ""},
                capture_output=True,
                check=False,
            )
            return [
                flag
                for line in trace.read_text().splitlines()
                if "execve(" in line and "/python" in line.split(",", 1)[0]
                for flag in ("-IS", "-I")
                if f', "{flag}", "-c", ' in line
            ]

        assert ["-IS"] == python_flags(
            "post-login", f"--config={tmp_path}/absent.toml", "/bin/true"
        )
        assert ["-I"] == python_flags("--version")

    def test_python_m_nsprov_isolated(self, tmp_path: Path) -> None:
        """``python -I -m nsprov`` (the fast path's fallback) ignores the same planted code."""
        marker = tmp_path / "ran"
        env = _plant(tmp_path, marker)

        proc = subprocess.run(
            [sys.executable, "-I", "-m", "nsprov", "--version"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

        assert (0, f"nsprov {nsprov.__version__}\n") == (proc.returncode, proc.stdout), proc.stderr
        assert not marker.exists()


def test_example_hooks_start_isolated() -> None:
    """Every shipped hook script, and the one in the docs, starts its Python with -I."""
    hooks = sorted((ROOT / "examples" / "hooks").glob("*.py"))
    firsts = [p.read_text().splitlines()[0] for p in hooks]
    firsts += [
        line
        for line in (ROOT / "docs" / "hooks.md").read_text().splitlines()
        if line.startswith("#!")
    ]

    assert hooks
    assert all(line.startswith("#!/") and line.endswith(" -I") for line in firsts), firsts


def test_lua_userdb_script_in_wheel() -> None:
    """The installed package carries the Lua userdb script, byte for byte the source tree's."""
    from importlib.resources import files

    installed = files("nsprov") / "lua" / "nsprov-userdb.lua"

    assert (ROOT / "src/nsprov/lua/nsprov-userdb.lua").read_bytes() == installed.read_bytes()
    assert not Path(str(installed)).is_relative_to(ROOT / "src")


def test_postlogin_defaults_agree() -> None:
    """The stdlib-only post-login parent keeps its own copies of the shared defaults: equal."""
    from nsprov import _defaults, _postlogin

    assert _defaults.DEFAULT_CONFIG_PATH == _postlogin.DEFAULT_CONFIG
    assert _defaults.POSTLOGIN_DEADLINE == _postlogin.DEFAULT_DEADLINE
    assert _defaults.POSTLOGIN_DEADLINE_MAX == _postlogin.DEADLINE_MAX
