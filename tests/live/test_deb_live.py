"""The Debian package, installed with apt in a fresh Debian 12 root, logs users in.

``dev/package`` builds ``nsprov_<version>_all.deb`` from this source tree (cached by the
tree's content below ``/var/cache/nsprov/deb``); :mod:`tests.live.chroot12` gives a copy
of a pristine Debian 12 root, where ``apt install ./nsprov_<version>_all.deb
dovecot-imapd`` installs it with Debian's own ``python3-attr`` and ``python3-pathspec``
(the floors of ``pyproject.toml``).  Then a real Dovecot 2.3 in that root runs
``/usr/bin/nsprov post-login`` (and the fast path ``/usr/lib/nsprov/fast.py``) on each IMAP
login, and ``LIST`` shows the shared namespace of a spool.  Also checked: what an admin
reaches for first (``nsprov --version``, ``man -w nsprov``, the units on disk and not
enabled, the conffile), and that reinstalling drops the caches and purging removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pytest

from .chroot12 import Dovecot23, base_status, fresh_root, install_debs
from .chroot24 import (
    ChrootAccounts,
    Dovecot24,
    chroot24_status,
    chroot_run,
    chroot_tempdir,
    make_maildir,
    write_file,
)
from .harness import list_mailboxes, namespaces, select_count

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

SOURCE = Path(__file__).resolve().parents[2]
DEB_CACHE = Path("/var/cache/nsprov/deb")
#: What goes into the package: a change to any of these builds the .deb again.
PACKAGED = (
    "pyproject.toml",
    "README.md",
    "dev/package",
    "src",
    "scripts",
    "debian",
    "packaging",
    "examples",
    "docs",
)
#: Cached packages of other trees are removed once this old (seconds).
DEB_CACHE_AGE = 2 * 86400
VERSION = next(
    line.split('"')[1]
    for line in (SOURCE / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)


def _tree_hash() -> str:
    digest = hashlib.sha256()
    for top in PACKAGED:
        path = SOURCE / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or "_build" in file.parts:
                continue
            digest.update(str(file.relative_to(SOURCE)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(name="deb", scope="session")
def _deb() -> Path:
    """The .deb of this tree, built by ``dev/package --deb-only`` unless already cached."""
    if os.geteuid() != 0:
        pytest.skip("building and installing the Debian package needs root")
    if shutil.which("dpkg-buildpackage") is None and shutil.which("apt-get") is None:
        pytest.skip("no dpkg-buildpackage and no apt-get to install it")
    outdir = DEB_CACHE / _tree_hash()
    if DEB_CACHE.is_dir():
        for old in DEB_CACHE.iterdir():
            if old != outdir and time.time() - old.stat().st_mtime > DEB_CACHE_AGE:
                shutil.rmtree(old, ignore_errors=True)
    deb = outdir / f"nsprov_{VERSION}_all.deb"
    if not deb.exists():
        outdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [str(SOURCE / "dev/package"), "--deb-only", "--outdir", str(outdir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        assert proc.returncode == 0, f"dev/package failed:\n{proc.stdout}\n{proc.stderr}"
    assert deb.exists()
    return deb


@pytest.fixture(name="root12", scope="module")
def _root12(deb: Path) -> Iterator[Path]:
    """A fresh Debian 12 root with the package and Dovecot 2.3 installed by apt."""
    base, reason = base_status()
    if base is None:
        pytest.skip(reason)
    with fresh_root(base) as root:
        proc = install_debs(root, deb, "dovecot-imapd", "dovecot-pop3d", "man-db")
        assert "nsprov" in proc.stdout
        yield root


def run(root: Path, *argv: str) -> str:
    return chroot_run(root, *argv).stdout


def test_installed_files(root12: Path) -> None:
    """What the admin reaches for first is there, and nothing names a python3.X path."""
    assert f"nsprov {VERSION}" == run(root12, "/usr/bin/nsprov", "--version").strip()
    assert "/usr/share/man/man1/nsprov.1.gz" == run(root12, "man", "-w", "nsprov").strip()
    page = run(root12, "env", "MANWIDTH=100", "man", "-P", "cat", "nsprov")
    assert "post-login" in page
    assert "/usr/lib/nsprov/fast.py" in page

    unit = (root12 / "lib/systemd/system/nsprov-serve.service").read_text()
    assert "ExecStart=/usr/bin/nsprov serve " in unit
    assert "RuntimeDirectory=nsprov" in unit
    assert "RuntimeDirectoryPreserve=yes" in unit
    assert "NoNewPrivileges=yes" in unit
    timer = (root12 / "lib/systemd/system/nsprov-cache-update.timer").read_text()
    assert "OnUnitActiveSec=" in timer
    assert (
        "ExecStart=/usr/bin/nsprov cache update "
        in (root12 / "lib/systemd/system/nsprov-cache-update.service").read_text()
    )
    # Installed, not enabled.
    wants = list((root12 / "etc/systemd/system").rglob("nsprov*"))
    assert [] == wants

    assert "/etc/nsprov/nsprov.toml" in run(root12, "dpkg-query", "-W", "-f=${Conffiles}", "nsprov")
    toml = (root12 / "etc/nsprov/nsprov.toml").read_text()
    assert not [line for line in toml.splitlines() if line.startswith("[")]  # all commented
    assert (root12 / "usr/share/nsprov/nsprov-userdb.lua").is_file()
    assert (root12 / "usr/share/bash-completion/completions/nsprov").is_file()
    assert (root12 / "usr/share/doc/nsprov/examples/config/single-spool.toml").is_file()

    files = run(root12, "dpkg", "-L", "nsprov").splitlines()
    assert "/usr/lib/python3/dist-packages/nsprov/_fast.py" in files
    assert not [f for f in files if "/python3." in f]
    # /usr/bin/nsprov is the direct launcher: Python itself, isolated, no bash on a login.
    launcher = (root12 / "usr/bin/nsprov").read_text()
    assert "#!/usr/bin/python3 -IS" == launcher.splitlines()[0]
    assert "sys.path.append('/usr/lib/python3/dist-packages')" in launcher
    assert 0o755 == (root12 / "usr/bin/nsprov").stat().st_mode & 0o7777
    check = ["/usr/bin/nsprov", "install-launcher", "--check", "--target=/usr/bin/nsprov"]
    assert run(root12, *check, "--python=/usr/bin/python3").startswith(
        "/usr/bin/nsprov is the direct launcher (#!/usr/bin/python3 -IS)"
    )
    # Debian's own attrs and pathspec, at the floors of pyproject.toml.
    versions = run(
        root12,
        "/usr/bin/python3",
        "-I",
        "-c",
        "import attrs, pathspec; print(attrs.__version__, pathspec.__version__)",
    ).split()
    assert ["22.2.0", "0.11.0"] == versions


@contextlib.contextmanager
def spool_setup(
    root: Path, dovecot_version: str
) -> Iterator[tuple[ChrootAccounts, PurePosixPath, PurePosixPath]]:
    """alice in group sales; a spool whose maildir sales that group may read; bob outside it."""
    with ChrootAccounts(root) as accounts, chroot_tempdir(root, "deb-") as work:
        group = accounts.add_group("sales")
        accounts.add_user("alice", groups=[group])
        accounts.add_user("bob")
        spool = work / "spool"
        (root / str(spool).lstrip("/")).mkdir(mode=0o755)
        make_maildir(
            root, spool / "sales", messages=2, gid=group.gid, dir_mode=0o750, file_mode=0o640
        )
        config = write_file(
            root,
            work / "nsprov.toml",
            f'[dovecot]\nversion = "{dovecot_version}"\n\n'
            f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n',
        )
        yield accounts, work, config


def check_login(dovecot: Dovecot24, accounts: ChrootAccounts) -> None:
    """alice sees the spool's shared namespace and its messages, bob sees none; no errors."""
    alice = dovecot.imap(accounts.users["alice"])
    try:
        assert ("Shared/sales/", "/") in namespaces(alice)["shared"]
        assert "Shared/sales" in list_mailboxes(alice)
        assert 2 == select_count(alice, "Shared/sales")
    finally:
        alice.logout()
    bob = dovecot.imap(accounts.users["bob"])
    try:
        assert [] == namespaces(bob)["shared"]
        assert not [n for n in list_mailboxes(bob) if n.startswith("Shared")]
    finally:
        bob.logout()
    assert [] == dovecot.errors()


LAUNCHER = "/usr/bin/nsprov post-login --config={config} --protocol=imap"
# The fast path's stable entry; no server listens, so it falls back to the full step.
FAST_PATH = (
    "/usr/bin/python3 -I -S /usr/lib/nsprov/fast.py --config={config} --protocol=imap"
    " --serve={work}/none.sock"
)


@pytest.mark.parametrize("program", [LAUNCHER, FAST_PATH], ids=["launcher", "fast-path"])
def test_login_through_package(root12: Path, program: str) -> None:
    """A Dovecot 2.3 login through the installed package gets the spool's shared namespace."""
    with spool_setup(root12, "2.3") as (accounts, work, config):
        line = program.format(config=config, work=work)
        users = list(accounts.users.values())
        with Dovecot23(work / "dovecot", users, postlogin={"imap": line}, root=root12) as dovecot:
            check_login(dovecot, accounts)


def test_debian13_install_and_login(deb: Path) -> None:
    """The same .deb installs on Debian 13 (Python 3.13, Dovecot 2.4) and logs users in.

    A throwaway copy of the Dovecot 2.4 test root (a Debian 13 debootstrap, see
    :mod:`tests.live.chroot24`), so the shared root never sees the package.
    """
    root24, reason = chroot24_status()
    if root24 is None:
        pytest.skip(reason)
    with fresh_root(root24) as root:
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        chroot_run(root, "apt-get", "update", timeout=900)  # the 2.4 root keeps no lists
        install_debs(root, deb)
        assert f"nsprov {VERSION}" == run(root, "/usr/bin/nsprov", "--version").strip()
        minor = run(root, "/usr/bin/python3", "-I", "-c", "import sys; print(sys.version_info[1])")
        assert "13" == minor.strip()
        assert (root / "lib/systemd/system/nsprov-serve.service").is_file()
        with spool_setup(root, "2.4") as (accounts, work, config):
            users = list(accounts.users.values())
            for program in (LAUNCHER, FAST_PATH):
                line = program.format(config=config, work=work)
                postlogin = {"imap": line}
                with Dovecot24(work / "dovecot", users, postlogin=postlogin, root=root) as dovecot:
                    check_login(dovecot, accounts)


def test_reinstall_drops_caches_and_purge_removes_them(root12: Path, deb: Path) -> None:
    """Upgrade (here: a reinstall, which runs postinst configure) and purge clean up."""
    run_dir = root12 / "run/nsprov"
    cache_dir = root12 / "var/cache/nsprov"
    for directory, mode in ((run_dir, 0o755), (cache_dir, 0o700)):
        directory.mkdir(mode=mode, exist_ok=True)
    (run_dir / "config-0123456789ab").write_text("stale")
    (cache_dir / "scan-0123456789ab.idx").write_text("stale")
    (cache_dir / "other-file").write_text("not nsprov's")
    run(root12, "dpkg", "-i", f"/tmp/{deb.name}")
    assert not (run_dir / "config-0123456789ab").exists()
    assert not (cache_dir / "scan-0123456789ab.idx").exists()
    assert (cache_dir / "other-file").exists()

    (cache_dir / "scan-0123456789ab.names").write_text("stale")
    run(root12, "apt-get", "purge", "-y", "nsprov")
    assert not run_dir.exists()
    assert not (cache_dir / "scan-0123456789ab.names").exists()
    assert (cache_dir / "other-file").exists()  # not made by nsprov: kept
    assert not (root12 / "usr/bin/nsprov").exists()
    assert not (root12 / "etc/nsprov").exists()
