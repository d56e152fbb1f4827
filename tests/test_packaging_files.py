"""What the Debian package is made of, checked without building it (no root, no Dovecot).

tests/live/test_deb_live.py builds the .deb and installs it in fresh Debian 12 and 13
roots; these tests keep the pieces honest on any machine: the launcher's interpreter
line that debian/rules substitutes, nsprov(1) generated from the installed command's help,
the units' commands and directories, bash completion, and the commented example config.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import nsprov

ROOT = Path(__file__).parent.parent
PACKAGING = ROOT / "packaging"
SITE = str(Path(nsprov.__file__).parent.parent)
NSPROV = str(Path(sys.executable).with_name("nsprov"))


def _commands() -> list[str]:
    out = subprocess.run([NSPROV, "--help"], capture_output=True, text=True, check=True).stdout
    return re.findall(r"^    ([a-z][a-z-]*)", out, flags=re.MULTILINE)


def test_deb_writes_direct_launcher() -> None:
    """debian/rules writes /usr/bin/nsprov with install-launcher's text: /usr/bin/python3 -IS."""
    rules = (ROOT / "debian/rules").read_text()

    assert "from nsprov._launcher import render" in rules
    assert "/usr/bin/python3 /usr/lib/python3/dist-packages > debian/nsprov/usr/bin/nsprov" in rules
    assert rules.index("execute_after_dh_python3:") < rules.index("_launcher import render")


@pytest.mark.parametrize("kind", ["bash", "direct"])
def test_launcher_named_interpreter_is_isolated(tmp_path: Path, kind: str) -> None:
    """With python= set, or written by install-launcher, the launcher runs that interpreter isolated."""
    from nsprov._launcher import default_package_dir, render

    source = (ROOT / "scripts/nsprov").read_text()
    assert 1 == source.splitlines().count("python=")
    launcher = tmp_path / "bin" / "nsprov"
    launcher.parent.mkdir()
    if kind == "bash":
        launcher.write_text(source.replace("\npython=\n", f"\npython={sys.executable}\n"))
    else:
        launcher.write_text(render(sys.executable, default_package_dir()))
    launcher.chmod(0o755)
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "ran"
    (planted / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    env = {"PYTHONPATH": str(planted), "USERDB_KEYS": "PYTHONPATH "}
    proc = subprocess.run(
        [str(launcher), "--version"], capture_output=True, text=True, env=env, check=False
    )
    # No python beside the launcher: only the named interpreter can have answered.
    assert (0, f"nsprov {nsprov.__version__}\n") == (proc.returncode, proc.stdout)
    assert not marker.exists()


def test_man_page_has_every_command() -> None:
    """make-man writes one section per command, each from that command's --help."""
    proc = subprocess.run(
        [sys.executable, str(PACKAGING / "make-man"), SITE, nsprov.__version__],
        capture_output=True,
        text=True,
        check=True,
    )
    page = proc.stdout
    commands = _commands()
    assert {"show", "check", "serve", "cache", "post-login"} <= set(commands)
    sections = re.findall(r"^\.SH COMMAND: (.*)$", page, flags=re.MULTILINE)
    assert [c.upper().replace("-", "\\-") for c in commands] == sections
    assert f'"nsprov {nsprov.__version__}"' in page.splitlines()[0]
    assert "\\-\\-serve" in page  # post-login's usage (printed on stderr) made it in
    man = shutil.which("man")
    if man is None:
        return
    rendered = subprocess.run(
        [man, "--warnings", "-l", "-"],
        input=page,
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""},
        check=True,
    )
    assert "" == rendered.stderr
    assert "nsprov post-login" in rendered.stdout


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((PACKAGING / "systemd" / name).read_text())
    return parser


def test_units_run_the_installed_command() -> None:
    """The units start /usr/bin/nsprov with options it has, and keep /run/nsprov across restarts."""
    serve = _unit("nsprov-serve.service")["Service"]
    assert serve["ExecStart"].startswith("/usr/bin/nsprov serve ")
    assert "nsprov" == serve["RuntimeDirectory"]
    assert "yes" == serve["RuntimeDirectoryPreserve"]
    assert "0700" == serve["RuntimeDirectoryMode"]  # as post-login makes it (the deadline hint)
    assert "yes" == serve["NoNewPrivileges"]
    serve_help = subprocess.run(
        [NSPROV, "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in re.findall(r"(--[a-z-]+)=", serve["ExecStart"]):
        assert option in serve_help
    update = _unit("nsprov-cache-update.service")["Service"]
    assert update["ExecStart"].startswith("/usr/bin/nsprov cache update --config=")
    timer = _unit("nsprov-cache-update.timer")
    assert "timers.target" == timer["Install"]["WantedBy"]
    assert "multi-user.target" == _unit("nsprov-serve.service")["Install"]["WantedBy"]


def test_example_config_is_inert_and_its_spool_block_valid(tmp_path: Path) -> None:
    """/etc/nsprov/nsprov.toml has no active key; uncommenting its spool gives a valid config."""
    text = (PACKAGING / "nsprov.toml").read_text()
    assert {} == tomllib.loads(text)
    lines = text.splitlines()
    start = lines.index("# [[spool]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    config = tmp_path / "nsprov.toml"
    config.write_text("\n".join(block) + "\n")
    loaded = nsprov.load_config(str(config))
    assert ["/var/spool/mail/Shared"] == [str(s.path) for s in loaded.spools]


@pytest.mark.skipif(
    not Path("/usr/share/bash-completion/bash_completion").exists(),
    reason="bash-completion is not installed",
)
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["nsprov", "s"], {"show", "serve"}),
        (["nsprov", "serve", "--sock"], {"--socket", "--socket-mode", "--socket-group"}),
        (["nsprov", "cache", ""], {"update", "status", "profile"}),
        (["nsprov", "post-login", "--protocol", ""], {"imap", "pop3"}),
    ],
)
def test_bash_completion(words: list[str], expected: set[str]) -> None:
    """The completion offers the commands, each command's options and some option values."""
    words_text = " ".join(f"'{w}'" for w in words)
    line = " ".join(words)
    script = (
        "source /usr/share/bash-completion/bash_completion\n"
        f"source {PACKAGING / 'completion/nsprov'}\n"
        f"COMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE='{line}'; COMP_POINT={len(line)}\n"
        "_nsprov nsprov\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {"PATH": f"{Path(NSPROV).parent}:/usr/bin:/bin", "HOME": "/nonexistent"}
    proc = subprocess.run(
        ["/bin/bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert expected == set(proc.stdout.split())
