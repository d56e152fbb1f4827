"""The direct launcher run as Dovecot runs it: a hostile environment, the same result as bash.

Dovecot runs the nsprov command as root with every userdb field in the environment, its
name uppercased.  These tests write the launcher with ``nsprov install-launcher``'s code,
plant code everywhere a Python could pick it up (``PYTHONPATH`` with an ``encodings`` and an
``nsprov`` package, ``PYTHONHOME``, ``PYTHONSTARTUP``, ``PYTHONINSPECT``, the current
directory, the launcher's own directory) and check that none of it runs, that
``post-login`` passes the same environment through it as through the bash launcher, and
that the other commands (which need ``site``) work.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nsprov
from nsprov._launcher import default_package_dir, install

ROOT = Path(__file__).parent.parent

#: A userdb login of an unprivileged user, with fields a shell could not export.
LOGIN = {
    "USER": "nobody",
    "HOME": "/nonexistent",
    "UID": str(pwd.getpwnam("nobody").pw_uid),
    "GID": str(pwd.getpwnam("nobody").pw_gid),
    "NAMESPACE": "s-own",
    "NAMESPACE/S-OWN/LOCATION": "maildir:/srv/own",
    "NAMESPACE/S-OWN/PREFIX": "Own/",
    "PLUGIN/QUOTA": "maildir",
    "NAMESPACE+": "s-own",
    "USERDB_KEYS": "HOME UID GID NAMESPACE NAMESPACE/S-OWN/LOCATION NAMESPACE/S-OWN/PREFIX "
    "PLUGIN/QUOTA NAMESPACE+ ",
}


def _plant(where: Path, marker: Path) -> dict[str, str]:
    """Code that appends to *marker* when run, and the variables that would make Python run it."""
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("sitecustomize", "usercustomize", "site", "startup"):
        (where / f"{name}.py").write_text(code)
    for package in ("nsprov", "encodings"):
        (where / package).mkdir()
        (where / package / "__init__.py").write_text(code)
    return {
        "PYTHONPATH": str(where),
        "PYTHONHOME": str(where),
        "PYTHONSTARTUP": str(where / "startup.py"),
        "PYTHONINSPECT": "1",
        "PYTHONUSERBASE": str(where),
        "PYTHONSAFEPATH": "",
        "PYTHONPLATLIBDIR": str(where),
        "PYTHONWARNINGS": "error",
        "PATH": str(where),
    }


@pytest.fixture(name="launchers")
def _launchers(tmp_path: Path) -> tuple[Path, Path]:
    """(direct, bash): the launcher install-launcher writes, and the wheel's bash one.

    Both start this interpreter; the direct one's directory holds planted code too (a
    script's directory must never be on its ``sys.path``).
    """
    direct = tmp_path / "direct" / "nsprov"
    direct.parent.mkdir(mode=0o755)
    direct.parent.chmod(0o755)
    install(python=sys.executable, package_dir=default_package_dir(), target=str(direct))
    bash = tmp_path / "bash" / "nsprov"
    bash.parent.mkdir()
    source = (ROOT / "scripts" / "nsprov").read_text()
    bash.write_text(source.replace("\npython=\n", f"\npython={sys.executable}\n"))
    bash.chmod(0o755)
    return direct, bash


@pytest.fixture(name="config")
def _config(base: Path) -> Path:
    """A config serving two mailboxes that nobody may read, without creating directories."""
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    for name in ("sales", "Weird Name"):
        for sub in ("cur", "new", "tmp"):
            (spool / name / sub).mkdir(parents=True)
            (spool / name / sub).chmod(0o755)
        (spool / name).chmod(0o755)
    spool.chmod(0o755)
    path = base / "nsprov.toml"
    path.write_text(
        f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n'
        "[namespace]\ncreate_dirs = false\n"
    )
    return path


def _run(
    launcher: Path, args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(launcher), *args],
        env=env,
        cwd=cwd,
        input=stdin.encode(),
        capture_output=True,
        check=False,
        timeout=60,
    )


def _passed(proc: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    """The environment ``/usr/bin/env -0`` printed."""
    return dict(item.partition("=")[::2] for item in proc.stdout.decode().split("\0") if item)


def _planted_in(launcher: Path, marker: Path) -> None:
    """Plant in the launcher's own directory too (never on sys.path under -I)."""
    code = f"open({str(marker)!r}, 'a').write('bindir ' + __name__ + '\\n')\n"
    for name in ("site", "sitecustomize"):
        (launcher.parent / f"{name}.py").write_text(code)
    (launcher.parent / "encodings").mkdir(exist_ok=True)
    (launcher.parent / "encodings" / "__init__.py").write_text(code)


@pytest.mark.skipif(os.geteuid() != 0, reason="post-login evaluates another user: needs root")
def test_post_login_same_as_bash(
    launchers: tuple[Path, Path], config: Path, tmp_path: Path
) -> None:
    """post-login through the direct launcher passes the environment bash's passes, planted code unrun."""
    direct, bash = launchers
    marker = tmp_path / "ran"
    plant = tmp_path / "plant"
    plant.mkdir()
    _planted_in(direct, marker)
    env = {**LOGIN, **_plant(plant, marker)}
    keys = env["USERDB_KEYS"] + "PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONINSPECT PATH "
    env["USERDB_KEYS"] = keys
    args = ["post-login", f"--config={config}", "--protocol=imap", "/usr/bin/env", "-0"]

    warm = _run(bash, args, env, plant)  # the first login builds the login profile
    through_bash = _run(bash, args, env, plant)
    through_direct = _run(direct, args, env, plant)

    assert 0 == warm.returncode, warm.stderr
    passed = _passed(through_direct)
    assert (0, _passed(through_bash)) == (through_direct.returncode, passed)
    # The userdb fields arrive unchanged, the namespaces of the two mailboxes added to them.
    assert {k: v for k, v in env.items() if k not in {"NAMESPACE", "USERDB_KEYS"}} == {
        k: v for k, v in passed.items() if k in env and k not in {"NAMESPACE", "USERDB_KEYS"}
    }
    assert passed["NAMESPACE"].startswith("s-own s-")
    assert 3 == len(passed["NAMESPACE"].split())
    assert passed["USERDB_KEYS"].startswith(keys)
    assert 2 == sum(v.startswith("Shared/") for k, v in passed.items() if k.endswith("/PREFIX"))
    assert not marker.exists(), marker.read_text()


def test_post_login_without_config(launchers: tuple[Path, Path], tmp_path: Path) -> None:
    """A login whose config is missing: one error line, the environment handed on exactly as given."""
    direct, _ = launchers
    marker = tmp_path / "ran"
    plant = tmp_path / "plant"
    plant.mkdir()
    _planted_in(direct, marker)
    env = {**LOGIN, **_plant(plant, marker)}
    args = ["post-login", f"--config={tmp_path}/absent.toml", "--", "/usr/bin/env", "-0"]

    proc = _run(direct, args, env, plant)

    assert (0, env) == (proc.returncode, _passed(proc))
    assert 1 == proc.stderr.count(b"\n"), proc.stderr
    assert not marker.exists(), marker.read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--version"], f"nsprov {nsprov.__version__}\n"),
        (["show", "--help"], "usage: nsprov show"),
        (["check", "--help"], "usage: nsprov check"),
        (["serve", "--help"], "usage: nsprov serve"),
        (["cache", "--help"], "usage: nsprov cache"),
        (["install-launcher", "--check"], ""),
        (["post-login", "--print-dovecot-config", "--protocol=imap"], "service imap-postlogin {"),
    ],
)
def test_other_commands_work(
    launchers: tuple[Path, Path], tmp_path: Path, args: list[str], expected: str
) -> None:
    """The commands that need site work through it; PYTHONINSPECT's prompt never reads stdin."""
    direct, _ = launchers
    marker = tmp_path / "ran"
    plant = tmp_path / "plant"
    plant.mkdir()
    _planted_in(direct, marker)
    env = _plant(plant, marker)
    stdin = f"open({str(marker)!r}, 'a').write('stdin')\n"
    if args[0] == "install-launcher":
        expected = f"{direct} is the direct launcher (#!{sys.executable} -IS)\n"
        args = [*args, f"--target={direct}"]

    proc = _run(direct, args, env, plant, stdin=stdin)

    assert 0 == proc.returncode, proc.stderr
    assert expected in proc.stdout.decode()
    assert not marker.exists(), marker.read_text()


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_no_shell_no_second_interpreter(launchers: tuple[Path, Path], tmp_path: Path) -> None:
    """From the launcher to the next program: two execs, the launcher and the next program."""
    direct, bash = launchers
    trace = tmp_path / "trace"

    def execs(launcher: Path) -> list[str]:
        login = ["post-login", f"--config={tmp_path}/absent.toml", "/bin/true"]
        subprocess.run(
            ["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), str(launcher), *login],
            env={"USER": "alice", "USERDB_KEYS": ""},
            capture_output=True,
            check=False,
            timeout=60,
        )
        return [
            line.split('execve("', 1)[1].split('"', 1)[0]
            for line in trace.read_text().splitlines()
            if 'execve("' in line and "= 0" in line
        ]

    assert [str(direct), "/bin/true"] == execs(direct)
    assert [str(bash), sys.executable, "/bin/true"] == execs(bash)
