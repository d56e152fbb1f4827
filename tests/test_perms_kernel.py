"""Differential test: :func:`nsprov._perms.decide` and :func:`nsprov._access.allows` vs the kernel.

As root, build a few thousand directories and files with random modes, owners
and POSIX ACLs under a world-traversable base directory, then fork one child per
identity that drops to it (``setgroups``, ``setgid``, ``setuid``; capabilities
gone) and asks :func:`os.access` about every path.  The parent evaluates the
same questions with :func:`decide` and every answer must agree.

The random cases are reproducible: the seed is printed, and
``NSPROV_PERMS_SEED=<seed>`` replays a run.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov import _access
from nsprov._perms import R_OK, W_OK, X_OK, FileFacts, Identity, PosixAcl, decide, read_acl

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.live

WANTS = (R_OK, W_OK, X_OK, R_OK | X_OK, R_OK | W_OK | X_OK)
N_DIRS = 4800
N_FILES = 1200
#: About one ACL in this many is written by ``setfacl`` rather than ``os.setxattr``.
SETFACL_EVERY = 12
#: A uid and a gid that no test account has: "somebody else".
STRANGER_UID = 3_999_999
STRANGER_GID = 3_999_998
LOCK_RETRIES = 50


@attrs.frozen
class Accounts:
    """Throwaway users and groups created for one test run."""

    #: user name -> Identity with the groups the account database gives it.
    users: dict[str, Identity]
    #: gids of the throwaway groups, in creation order.
    gids: tuple[int, ...]


def _run_account_tool(*argv: str) -> None:
    """Run useradd/userdel/groupadd/groupdel, retrying while another process holds the lock."""
    for _ in range(LOCK_RETRIES):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return
        if "lock" not in proc.stderr.lower():
            break
        time.sleep(0.1)
    raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


@pytest.fixture(name="accounts")
def _accounts() -> Iterator[Accounts]:
    """Four groups and three users, removed again whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("the kernel differential test needs root")
    tools = ("setfacl", "useradd", "userdel", "groupadd", "groupdel")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the kernel differential test needs {', '.join(missing)}")

    stem = f"nspt{secrets.token_hex(4)}"
    group_names = [f"{stem}g{i}" for i in range(4)]
    # (name, primary group index, supplementary group indexes)
    user_specs = [(f"{stem}u0", 0, (1,)), (f"{stem}u1", 1, (2, 3)), (f"{stem}u2", 3, ())]
    made_groups: list[str] = []
    made_users: list[str] = []
    try:
        for name in group_names:
            _run_account_tool("groupadd", name)
            made_groups.append(name)
        for name, primary, supplementary in user_specs:
            argv = ["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-g", group_names[primary]]
            if supplementary:
                argv += ["-G", ",".join(group_names[i] for i in supplementary)]
            _run_account_tool(*argv, name)
            made_users.append(name)
        users = {}
        for name in made_users:
            pw = pwd.getpwnam(name)
            users[name] = Identity(
                uid=pw.pw_uid, gid=pw.pw_gid, groups=os.getgrouplist(name, pw.pw_gid)
            )
        yield Accounts(users=users, gids=tuple(grp.getgrnam(g).gr_gid for g in group_names))
    finally:
        for name in reversed(made_users):
            _run_account_tool("userdel", name)
        for name in reversed(made_groups):
            _run_account_tool("groupdel", name)


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    """A fresh mode 0755 directory outside the untraversable ``/tmp/pytest-of-root``."""
    path = Path(tempfile.mkdtemp(prefix="nspt-", dir="/var/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path)


def _random_acl(rng: random.Random, uids: Sequence[int], gids: Sequence[int]) -> PosixAcl:
    """Return a random access ACL over the given ids; a mask is likely to be 0 now and then."""
    users = [(uid, rng.randrange(8)) for uid in rng.sample(uids, rng.randrange(4))]
    groups = [(gid, rng.randrange(8)) for gid in rng.sample(gids, rng.randrange(4))]
    named = bool(users or groups)
    mask = rng.randrange(8) if named or rng.random() < 0.3 else None
    return PosixAcl(
        user_obj=rng.randrange(8),
        group_obj=rng.randrange(8),
        other=rng.randrange(8),
        mask=mask,
        users=users,
        groups=groups,
    )


def _setfacl_spec(acl: PosixAcl) -> str:
    """Render *acl* as a ``setfacl -m`` argument with numeric ids."""

    def rwx(perm: int) -> str:
        return "".join(c if perm & bit else "-" for c, bit in zip("rwx", (4, 2, 1), strict=True))

    entries = [f"u::{rwx(acl.user_obj)}", f"g::{rwx(acl.group_obj)}", f"o::{rwx(acl.other)}"]
    entries += [f"u:{uid}:{rwx(perm)}" for uid, perm in acl.users]
    entries += [f"g:{gid}:{rwx(perm)}" for gid, perm in acl.groups]
    if acl.mask is not None:
        entries.append(f"m::{rwx(acl.mask)}")
    return ",".join(entries)


def _make_cases(base: Path, rng: random.Random, accounts: Accounts) -> tuple[list[str], int]:
    """Create the random directories and files; return their paths and the setfacl count."""
    uids = [0, *(ident.uid for ident in accounts.users.values()), STRANGER_UID]
    gids = [0, *accounts.gids, STRANGER_GID]
    paths = []
    via_setfacl = 0
    for index in range(N_DIRS + N_FILES):
        if index < N_DIRS:
            path = base / f"d{index}"
            path.mkdir(0o700)
        else:
            path = base / f"f{index}"
            path.touch(0o600, exist_ok=False)
        os.chown(path, rng.choice(uids), rng.choice(gids))
        # Now and then a setuid, setgid or sticky bit, which must not matter.
        path.chmod(rng.randrange(0o10000) if rng.random() < 0.1 else rng.randrange(0o1000))
        if rng.random() < 0.5:
            acl = _random_acl(rng, uids, gids)
            if rng.randrange(SETFACL_EVERY) == 0:
                subprocess.run(["setfacl", "-n", "-m", _setfacl_spec(acl), path], check=True)
                via_setfacl += 1
            else:
                os.setxattr(path, "system.posix_acl_access", acl.to_xattr())
            expected = None if acl.is_minimal() else acl

            assert expected == read_acl(str(path)), f"{path}: the ACL read back differs"
        paths.append(str(path))
    return paths, via_setfacl


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _drop_all_capabilities() -> None:
    """Clear this process's capability sets, so even uid 0 gets plain DAC checks."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _kernel_verdicts(ident: Identity, paths: Sequence[str]) -> bytes:
    """Ask the kernel, in a child that has become *ident*: one byte per path, bit i for WANTS[i]."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits without reporting coverage
        status = 1
        try:
            os.close(read_fd)
            os.setgroups(sorted(ident.groups))
            os.setgid(ident.gid)
            os.setuid(ident.uid)
            # access() as uid 0 uses the permitted capabilities; as any other uid, none.
            _drop_all_capabilities()
            out = bytearray()
            for path in paths:
                bits = 0
                for i, want in enumerate(WANTS):
                    if os.access(path, want, effective_ids=False):
                        bits |= 1 << i
                out.append(bits)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(out)
            status = 0
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    expected = 0

    assert expected == os.waitstatus_to_exitcode(wait_status), f"the child for {ident} failed"
    return data


def _identities(accounts: Accounts) -> list[Identity]:
    """Every test user with its real groups, and a few made-up identities."""
    u0, u1, u2 = accounts.users.values()
    g0, g1, g2, g3 = accounts.gids
    return [
        *accounts.users.values(),
        # A user's uid with a group set the account database does not give it.
        Identity(uid=u0.uid, gid=g3, groups={g2}),
        Identity(uid=u1.uid, gid=0),
        Identity(uid=u2.uid, gid=g0, groups={g0, g1, g2, g3, 0}),
        # uid 0 without capabilities is evaluated like anybody else.
        Identity(uid=0, gid=g1, groups={g2}),
        Identity(uid=STRANGER_UID, gid=STRANGER_GID),
        Identity(uid=STRANGER_UID, gid=g2, groups={STRANGER_GID}),
    ]


class TestDecideAgainstKernel:
    """decide() gives the answers the running kernel's access(2) gives."""

    def test_random_cases_agree(
        self, accounts: Accounts, base: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every identity, path and wanted access gets the kernel's verdict."""
        seed = int(os.environ.get("NSPROV_PERMS_SEED", secrets.randbelow(2**32)))
        with capsys.disabled():
            print(f"\ndifferential: seed {seed} (replay with NSPROV_PERMS_SEED={seed})")
        started = time.monotonic()
        rng = random.Random(seed)
        paths, via_setfacl = _make_cases(base, rng, accounts)
        facts = [FileFacts.from_stat(os.lstat(path), read_acl(path)) for path in paths]
        identities = _identities(accounts)
        mismatches = []
        compared = 0
        for ident in identities:
            verdicts = _kernel_verdicts(ident, paths)
            # The lean login's verdict: lazy groups, looked up only when they decide.
            lazy = _access.Ident(
                ident.uid, ident.gid, _access.LazyGroups(frozenset(ident.groups).copy)
            )

            assert len(paths) == len(verdicts)
            for path, fact, bits in zip(paths, facts, verdicts, strict=True):
                for i, want in enumerate(WANTS):
                    kernel = bool(bits >> i & 1)
                    ours = decide(fact, ident, want)
                    compared += 1
                    lean = _access.allows(fact, lazy, want)
                    if kernel != ours.allowed or kernel != lean:
                        mismatches.append(
                            f"{path}: mode={fact.mode:o} uid={fact.uid} gid={fact.gid} "
                            f"acl={fact.acl} ident={ident} want={want}: "
                            f"kernel={kernel} decide={ours} allows={lean}"
                        )
        elapsed = time.monotonic() - started
        with capsys.disabled():
            print(
                f"differential: {len(paths)} cases ({via_setfacl} ACLs via setfacl) x "
                f"{len(identities)} identities x {len(WANTS)} wants = {compared} checks, "
                f"{len(mismatches)} mismatches, {elapsed:.1f} s, seed {seed}"
            )

        expected: list[str] = []

        assert expected == mismatches[:20], f"seed {seed}: {len(mismatches)} mismatches"
        assert len(paths) >= 5000
