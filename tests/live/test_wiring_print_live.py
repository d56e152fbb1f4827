"""``nsprov post-login --print-dovecot-config`` as a mail admin uses it: paste, reload, log in.

Dovecot 2.3 on the host: the printed blocks pass ``doveconf -n`` and a login through them
gets the shared namespaces, with the private namespace left at Debian's default separator
``.`` (the printed ``namespace inbox`` snippet fixes it).  Dovecot 2.4 in the chroot: the
printed 2.4 blocks pass ``doveconf -n``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .chroot24 import Dovecot24, chroot24_status, chroot_run, chroot_tempdir, write_file
from .harness import Dovecot, SystemAccounts, list_mailboxes, make_maildir, namespaces

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))


def printed(*args: str) -> str:
    proc = subprocess.run(
        [NSPROV, "post-login", "--print-dovecot-config", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def test_printed_23_config_logs_in(live_base: Path, accounts: SystemAccounts) -> None:
    """The printed 2.3 wiring passes doveconf -n and serves a login, even on a '.' private namespace."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=1, owner=0, group=0, mode=0o755)
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    config.chmod(0o644)
    wiring = printed(f"--config={config}", "--dialect=2.3")
    assert f"script-login {NSPROV} post-login --config={config} --protocol=imap" in wiring
    user = accounts.user("wired")

    with Dovecot(
        live_base / "dovecot", [user], extra_conf=wiring, private_separator="."
    ) as dovecot:
        shown = subprocess.run(
            ["doveconf", "-n", "-c", str(dovecot.conf_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        with dovecot.imap(user) as imap:
            boxes = list_mailboxes(imap)
            shared = [prefix for prefix, _ in namespaces(imap)["shared"]]
        pop3 = dovecot.pop3(user)
        pop3.quit()
        errors = dovecot.errors()

    assert 0 == shown.returncode, shown.stderr
    assert "service imap-postlogin {" in shown.stdout
    assert "service pop3-postlogin {" in shown.stdout
    assert "Shared/sales" in boxes
    assert ["Shared/sales/"] == shared
    assert [] == errors


def test_printed_24_config_passes_doveconf() -> None:
    """The printed 2.4 wiring is valid Dovecot 2.4 configuration (doveconf -n in the 2.4 root)."""
    root, reason = chroot24_status()
    if root is None:
        pytest.skip(reason)
    inside_nsprov = "/opt/nsprov-venv/bin/nsprov"
    wiring = printed(
        "--config=/etc/nsprov/nsprov.toml", "--dialect=2.4", f"--nsprov={inside_nsprov}"
    )
    with chroot_tempdir(root, "wiring-") as work:
        dovecot = Dovecot24(work, [], extra_conf=wiring, root=root)
        conf = write_file(root, work / "dovecot.conf", dovecot.config())
        shown = chroot_run(root, "/usr/bin/doveconf", "-n", "-c", str(conf), check=False)

    assert 0 == shown.returncode, shown.stderr
    assert (
        f"executable = script-login {inside_nsprov} post-login "
        "--config=/etc/nsprov/nsprov.toml --protocol=imap" in shown.stdout
    )
    assert "service pop3-postlogin {" in shown.stdout
    assert "separator = /" in shown.stdout
