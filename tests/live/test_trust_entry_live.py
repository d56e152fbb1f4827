"""nsprov's entry points under a real Dovecot 2.3: nothing in a userdb field runs as root.

Dovecot's script-login runs ``nsprov post-login`` as root with every userdb field in the
environment, its key uppercased (contract section 2): a field ``pythonpath=...`` from SQL,
LDAP, a passwd-file or an earlier script becomes ``PYTHONPATH``.  Python honours that
variable, ``PYTHONHOME`` and ``PYTHONSTARTUP`` unless it starts isolated (``-I``), so the
``nsprov`` command starts its interpreter with ``-I``.  Here a passdb passwd-file hands out
``userdb_pythonpath`` (a directory with a ``sitecustomize.py``) and ``userdb_pythonhome`` (a
fake standard library whose ``encodings`` package is the planted code); each login, over IMAP
and POP3, must work and give the user the spool's namespace, and the planted code must never
run.  A program after nsprov in the chain records the environment it got, proving that the
fields did reach the login.  IMAP runs ``nsprov`` by its path in the virtual environment, POP3
through a symbolic link to it, as an installation into ``/usr/local/bin`` has it.
"""

from __future__ import annotations

import imaplib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .harness import Dovecot, SystemAccounts, User, make_maildir, namespaces, write_script

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
#: The program after nsprov: isolated itself, and not a shell (dash drops ``NAMESPACE/...``).
RECORDER = f"{sys.executable} -IS"  # one shebang argument
RECORD = """\
import os, sys
label, *chain = sys.argv[1:]
with open(f"{base}/env.{{os.environ['USER']}}.{{label}}", "w") as out:
    out.writelines(f"{{k}}={{v}}\\n" for k, v in os.environ.items())
os.execv(chain[0], chain)
"""
STDLIB = f"lib/python{sys.version_info.major}.{sys.version_info.minor}"


class FieldsDovecot(Dovecot):
    """The harness's Dovecot, whose passdb passwd-file gives users extra ``userdb_*`` fields."""

    def __init__(
        self,
        workdir: Path,
        users: Iterable[User],
        *,
        fields: Mapping[str, Mapping[str, str]],
        **options: Any,
    ) -> None:
        super().__init__(workdir, users, **options)
        self.fields = fields

    def passwd_text(self) -> str:
        """``name:{PLAIN}password::::::userdb_key=value ...``: the 8th column is extra fields."""
        lines = []
        for u in self.users:
            extra = " ".join(f"userdb_{k}={v}" for k, v in self.fields.get(u.name, {}).items())
            lines.append(f"{u.name}:{{PLAIN}}{u.password}::::::{extra}\n")
        return "".join(lines)


def plant(base: Path, marker: Path) -> dict[str, Path]:
    """Code that appends a line to *marker* when Python loads it, where each variable points."""
    code = (
        f"import os\nopen({str(marker)!r}, 'a').write(f'{{__name__}} euid={{os.geteuid()}}\\n')\n"
    )
    path = base / "plant-path"
    path.mkdir(mode=0o755)
    for name in ("sitecustomize", "usercustomize"):
        (path / f"{name}.py").write_text(code)
    startup = base / "plant-startup.py"
    startup.write_text(code)
    home = base / "plant-home"
    encodings = home / STDLIB / "encodings"
    encodings.mkdir(parents=True)
    # No ``import os`` here: without the real standard library only built-ins exist.
    (encodings / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('encodings from PYTHONHOME\\n')\n"
    )
    for p in (path, home, *home.rglob("*")):
        p.chmod(0o755)
    return {"path": path, "startup": startup, "home": home}


def recorded(base: Path, user: User, label: str) -> dict[str, str]:
    """The environment the program after nsprov got for *user*'s *label* login."""
    text = (base / f"env.{user.name}.{label}").read_text()
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def test_userdb_python_variables_run_nothing(accounts: SystemAccounts, live_base: Path) -> None:
    """PYTHONPATH, PYTHONSTARTUP and PYTHONHOME from userdb fields: logins work, no planted code runs."""
    base = live_base
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=2, owner=0, group=0, mode=0o755)
    config = base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    marker = base / "planted-code-ran"
    planted = plant(base, marker)
    record = write_script(base / "record-env", RECORD.format(base=str(base)), interpreter=RECORDER)
    link_dir = base / "bin"
    link_dir.mkdir(mode=0o755)
    (link_dir / "nsprov").symlink_to(NSPROV)
    by_path = accounts.user("bypath")
    by_home = accounts.user("byhome")
    fields = {
        by_path.name: {
            "pythonpath": str(planted["path"]),
            "pythonstartup": str(planted["startup"]),
        },
        by_home.name: {"pythonhome": str(planted["home"])},
    }
    postlogin = {
        "imap": f"{NSPROV} post-login --config={config} --protocol=imap {record} imap",
        "pop3": f"{link_dir}/nsprov post-login --config={config} --protocol=pop3 {record} pop3",
    }
    shared: dict[str, list[str]] = {}
    messages: dict[str, int] = {}
    with FieldsDovecot(
        base / "dovecot", [by_path, by_home], fields=fields, postlogin=postlogin
    ) as dovecot:
        for user in (by_path, by_home):
            with dovecot.imap(user) as imap:
                shared[user.name] = [p for p, _ in namespaces(imap)["shared"]]
            pop3 = dovecot.pop3(user)
            try:
                messages[user.name] = pop3.stat()[0]
            finally:
                pop3.quit()
        errors = [e for e in dovecot.errors() if "nsprov" in e or "python" in e.lower()]

    for label in ("imap", "pop3"):
        assert str(planted["path"]) == recorded(base, by_path, label).get("PYTHONPATH")
        assert str(planted["startup"]) == recorded(base, by_path, label).get("PYTHONSTARTUP")
        assert str(planted["home"]) == recorded(base, by_home, label).get("PYTHONHOME")
    assert not marker.exists(), marker.read_text()
    assert {by_path.name: ["Shared/sales/"], by_home.name: ["Shared/sales/"]} == shared
    assert {by_path.name: 0, by_home.name: 0} == messages
    assert [] == errors


def _spool_config(base: Path) -> Path:
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=2, owner=0, group=0, mode=0o755)
    config = base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    return config


#: A bad value on the script-login line, per protocol (IMAP, POP3), and the option it names.
BAD_VALUES = [
    ("--deadline=60", "--deadline=60", "--deadline"),
    ("--deadline=abc", "--deadline=abc", "--deadline"),
    ("--protocol=IMAP", "--protocol=POP3", "--protocol"),
    ("--on-error=maybe", "--on-error=maybe", "--on-error"),
    ("--serve=relative.sock", "--serve=relative.sock", "--serve"),
    ("--serve-timeout=9", "--serve-timeout=9", "--serve-timeout"),
]


@pytest.mark.parametrize(
    ("imap_bad", "pop3_bad", "option"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES]
)
def test_bad_option_value_fails_open(
    accounts: SystemAccounts, live_base: Path, imap_bad: str, pop3_bad: str, option: str
) -> None:
    """A bad value on the post-login line: logins work, with the namespaces, one error line each."""
    config = _spool_config(live_base)
    user = accounts.user("reader")
    postlogin = {
        p: f"{NSPROV} post-login --config={config} --protocol={p} {bad}"
        for p, bad in (("imap", imap_bad), ("pop3", pop3_bad))
    }
    with Dovecot(live_base / "dovecot", [user], postlogin=postlogin) as dovecot:
        with dovecot.imap(user) as imap:
            shared = [p for p, _ in namespaces(imap)["shared"]]
        pop3 = dovecot.pop3(user)
        try:
            messages = pop3.stat()[0]
        finally:
            pop3.quit()
        errors = [e for e in dovecot.errors() if "nsprov: " in e]

    assert (["Shared/sales/"], 0) == (shared, messages)
    assert 2 == len(errors), errors
    assert all(option in e for e in errors), errors


def test_bad_option_value_with_on_error_deny(accounts: SystemAccounts, live_base: Path) -> None:
    """With a valid --on-error=deny beside it, a bad value denies the login, with one error line."""
    config = _spool_config(live_base)
    user = accounts.user("reader")
    line = f"{NSPROV} post-login --config={config} --deadline=abc --protocol=imap --on-error=deny"
    with Dovecot(live_base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
        with pytest.raises(imaplib.IMAP4.abort):
            dovecot.imap(user)
        errors = [e for e in dovecot.errors() if "nsprov: " in e]

    assert 1 == len(errors), errors
    assert "--deadline" in errors[0]
    assert "denying the login" in errors[0]
