"""A fresh Debian 12 (bookworm) root for the Debian package's live test.

The package test installs ``dist/nsprov_<version>_all.deb`` with apt into a root that has
nothing of nsprov and nothing of the host's Python, and logs in through the Dovecot 2.3 of
that root.  Building such a root with ``debootstrap`` takes a minute or two, so a pristine
*base* root is built once and cached in :data:`DEFAULT_BASE` (rebuilt when
:data:`RECIPE` changes), with the Debian packages the test installs already downloaded
into its apt cache; each test run copies the base to a throwaway directory and installs
the packages there, so every run starts from a root that never saw nsprov.

As in :mod:`tests.live.chroot24` (whose helpers run programs and create accounts in any
root), nothing is mounted into the root and nothing stays behind.  Standard library only;
callers turn an unavailable root (:func:`base_status`) into a skip themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .chroot24 import Dovecot24, chroot_run

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DEFAULT_BASE", "Dovecot23", "base_status", "fresh_root", "install_debs"]

#: The cached pristine root (``$NSPROV_CHROOT12`` overrides it).
DEFAULT_BASE = Path("/var/cache/nsprov/chroot12")
SUITE = "bookworm"
#: What the test installs besides nsprov (downloaded into the base's apt cache up front).
PACKAGES = (
    "dovecot-imapd",
    "dovecot-pop3d",
    "man-db",
    "acl",
    "python3",
    "python3-attr",
    "python3-pathspec",
)
RECIPE = f"nsprov-chroot12 recipe=1 suite={SUITE} packages={' '.join(PACKAGES)}"
MARKER = ".nsprov-chroot-ok"
_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def _mounted_below(path: Path) -> bool:
    prefix = str(path)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(
            line.split()[1] == prefix or line.split()[1].startswith(prefix + "/") for line in mounts
        )


def _remove(path: Path) -> None:
    if _mounted_below(path):
        raise RuntimeError(f"something is mounted below {path}; unmount it first")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True)


def _build(base: Path) -> None:
    """debootstrap the base root into ``base.partial`` and rename it once complete."""
    mirror = os.environ.get("NSPROV_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    work = base.with_name(base.name + ".partial")
    if work.exists():
        _remove(work)
    subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(work), mirror],
        env=_ENV,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    shutil.copyfile("/etc/resolv.conf", work / "etc/resolv.conf")
    policy = work / "usr/sbin/policy-rc.d"  # maintainer scripts never start services
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    chroot_run(work, "apt-get", "update", env=_ENV, timeout=900)
    chroot_run(
        work,
        "apt-get",
        "install",
        "-y",
        "--download-only",
        "--no-install-recommends",
        *PACKAGES,
        env=_ENV,
        timeout=1800,
    )
    (work / MARKER).write_text(RECIPE + "\n")
    if base.exists():
        _remove(base)
    work.rename(base)


@functools.cache
def base_status() -> tuple[Path | None, str]:
    """Return ``(base, "")`` for a usable base root, building it on first use, else ``(None, why)``."""
    base = Path(os.environ.get("NSPROV_CHROOT12") or DEFAULT_BASE)
    if os.geteuid() != 0:
        return None, "the Debian 12 chroot needs root"
    if shutil.which("debootstrap") is None and not (base / MARKER).exists():
        return None, "debootstrap not installed"
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{base}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = base / MARKER
        if not (marker.exists() and marker.read_text().strip() == RECIPE):
            try:
                _build(base)
            except (subprocess.SubprocessError, RuntimeError, OSError) as e:
                detail = getattr(e, "stderr", "") or ""
                return None, f"building the Debian 12 root {base} failed: {e} {detail[-2000:]}"
    return base, ""


@contextlib.contextmanager
def fresh_root(base: Path) -> Iterator[Path]:
    """Yield a throwaway copy of the base root (0755, below /var/tmp), removed afterwards."""
    top = Path(tempfile.mkdtemp(prefix="nsprov-deb12-", dir="/var/tmp"))
    root = top / "root"
    try:
        top.chmod(0o755)
        subprocess.run(["cp", "-a", "--", str(base), str(root)], check=True, timeout=600)
        (root / MARKER).unlink(missing_ok=True)  # a copy is never a cached base
        yield root
    finally:
        _remove(top)


def install_debs(root: Path, deb: Path, *packages: str) -> subprocess.CompletedProcess[str]:
    """``apt install ./<deb> PACKAGES`` in the root; refresh the package lists if they are stale."""
    inside = f"/tmp/{deb.name}"
    shutil.copyfile(deb, root / inside.lstrip("/"))
    argv = ("apt-get", "install", "-y", "--no-install-recommends", inside, *packages)
    proc = chroot_run(root, *argv, check=False, env=_ENV, timeout=1800)
    if proc.returncode != 0:  # a point release replaced a cached package: fetch the lists
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        chroot_run(root, "apt-get", "update", env=_ENV, timeout=900)
        proc = chroot_run(root, *argv, env=_ENV, timeout=1800)
    return proc


class Dovecot23(Dovecot24):
    """:class:`~tests.live.chroot24.Dovecot24`'s instance, configured for Dovecot 2.3 (Debian 12)."""

    def config(self) -> str:
        """Return the dovecot.conf text (2.3 syntax) for the current ports."""
        work = self.workdir
        lines = [
            "protocols = imap pop3",
            "listen = 127.0.0.1",
            f"base_dir = {work}/run",
            f"state_dir = {work}/state",
            f"instance_name = nsprov23-{work.name}",
            f"log_path = {work}/dovecot.log",
            "ssl = no",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain",
            "auth_verbose = yes",
            "first_valid_uid = 100",
            "passdb {",
            "  driver = passwd-file",
            f"  args = {work}/passwd",
            "}",
            "userdb {",
            "  driver = passwd",
            "}",
            "mail_location = maildir:~/Maildir",
            "namespace inbox {",
            "  inbox = yes",
            f"  separator = {self.private_separator}",
            "}",
            "service imap-login {",
            "  inet_listener imap {",
            f"    port = {self.imap_port}",
            "  }",
            "  inet_listener imaps {",
            "    port = 0",
            "  }",
            "}",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    port = {self.pop3_port}",
            "  }",
            "  inet_listener pop3s {",
            "    port = 0",
            "  }",
            "}",
        ]
        for protocol, program in self.postlogin.items():
            lines += [
                f"service {protocol} {{",
                f"  executable = {protocol} {protocol}-postlogin",
                "}",
                f"service {protocol}-postlogin {{",
                f"  executable = script-login {program}",
                f"  unix_listener {protocol}-postlogin {{",
                "  }",
                "}",
            ]
        return "\n".join(lines) + "\n" + self.extra_conf + "\n"
