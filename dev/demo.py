"""A self-contained demo of nsprov's main job.

Builds a throwaway spool with real modes (and, as root, real owners, groups
and a POSIX ACL), then prints what ``nsprov show`` gives three identities.
Works unprivileged too: the identities are then relative to the current user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NSPROV = str(Path(sys.executable).with_name("nsprov"))
ROOT = os.geteuid() == 0
ME, MY_GID = os.getuid(), os.getgid()
TEAM_GID = 70100 if ROOT else MY_GID
ALICE = {"uid": 70001 if ROOT else ME, "gid": 70001 if ROOT else MY_GID, "groups": [TEAM_GID]}
BOB = {"uid": 70002, "gid": 70002, "groups": []}
CAROL = {"uid": 70003, "gid": 70003, "groups": []}


def maildir(path: Path, mode: int, *, uid: int = -1, gid: int = -1, messages: int = 2) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    for i in range(messages):
        (path / "cur" / f"{i}.demo:2,S").write_text(f"Subject: demo {i}\n\nhello\n")
    for p in (path, path / "cur", path / "new", path / "tmp"):
        p.chmod(mode)
        if ROOT:
            os.chown(p, uid, gid)


def grant_acl(path: Path, uid: int) -> bool:
    """Give *uid* read+search through a POSIX ACL entry (as setfacl -m u:UID:rx would)."""
    sys.path.insert(0, "")
    from nsprov import PosixAcl  # noqa: PLC0415

    acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(uid, 5)])
    try:
        for p in (path, path / "cur", path / "new"):
            os.setxattr(p, "system.posix_acl_access", acl.to_xattr())
    except OSError:
        return False
    return True


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="nsprov-demo-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        spool = base / "Shared"
        spool.mkdir(mode=0o755)
        maildir(spool / "sales", 0o755)
        maildir(spool / "team", 0o750, uid=0, gid=TEAM_GID)
        maildir(spool / "alice-only", 0o700, uid=ALICE["uid"], gid=ALICE["gid"])
        maildir(spool / "acl-carol", 0o700)
        acl = grant_acl(spool / "acl-carol", CAROL["uid"])
        for hostile in ("Weird Name", "odd:INDEX=evil", "pct%u", "Case", "case"):
            maildir(spool / hostile, 0o755)
        maildir(spool / ".hidden", 0o755)
        (spool / "notes.txt").write_text("not a mailbox\n")
        (spool / "empty").mkdir(mode=0o755)
        (spool / "link").symlink_to("sales")
        config = base / "nsprov.toml"
        config.write_text(
            f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n'
        )
        print(
            f"# spool {spool} (running as {'root' if ROOT else 'uid ' + str(ME)}; ACL {'set' if acl else 'unsupported here'})"
        )
        print(f"# config {config}:\n{config.read_text()}")
        for name, ident in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
            argv = [
                NSPROV,
                "show",
                "--user",
                name,
                "--config",
                str(config),
                "--uid",
                str(ident["uid"]),
                "--gid",
                str(ident["gid"]),
                "--groups",
                ",".join(map(str, ident["groups"])),
                "--home",
                f"/home/{name}",
            ]
            if name == "bob":
                argv.append("--explain")
            print(f"$ nsprov show --user {name}{' --explain' if name == 'bob' else ''}")
            sys.stdout.flush()
            subprocess.run(argv, check=True)
            print()
        print("$ nsprov show --user bob --format=env   # what post-login exports for bob")
        sys.stdout.flush()
        out = subprocess.run(
            [
                NSPROV,
                "show",
                "--user",
                "bob",
                "--config",
                str(config),
                "--uid",
                "70002",
                "--gid",
                "70002",
                "--groups",
                "",
                "--home",
                "/home/bob",
                "--format=env",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(
            "\n".join(
                line[:150]
                for line in out.splitlines()
                if "/S-SALES" in line or line.startswith("NAMESPACE=")
            )
        )
    finally:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
