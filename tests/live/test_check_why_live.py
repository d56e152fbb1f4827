"""``nsprov check`` on real ACLs: a half-applied grant, and what refused a reader.

A mailbox whose directory got ``setfacl -m g:team:rx`` but whose ``cur`` and ``new`` did not
(``setfacl`` without ``-R``): ``partial-grant`` names the entry and what blocks it, and
``chgrp-trap`` does not count the team as readers; ``no-access`` says which bits refused.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from nsprov._perms import PosixAcl

from .test_check_live import (  # the module's accounts and runners
    ACL_XATTR,
    World,
    _scratch,  # noqa: F401 - fixture
    _state,  # noqa: F401 - fixture
    _world,  # noqa: F401 - fixture
    dovecot_conf,
    maildir,
    run_cli,
    wiring,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.live


def test_half_applied_acl(world: World, scratch: Path) -> None:
    """setfacl on the directory only: partial-grant; no-access names cur's other bits."""
    spool = scratch / "spool"
    spool.mkdir(mode=0o755)
    box = maildir(spool / "box", mode=0o750)
    acl = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, groups=[(world.team.gid, 5)])
    os.setxattr(box, ACL_XATTR, acl.to_xattr())
    cfg = scratch / "nsprov.toml"
    cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
    conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))

    _, doc = run_cli(f"--config={cfg}", f"--dovecot-config={conf}", f"--user={world.alice.name}")

    codes = {f["code"]: f for f in doc["findings"]}
    assert "chgrp-trap" not in codes
    partial = codes["partial-grant"]
    assert (str(box), "warning") == (partial["subject"], partial["severity"])
    assert f"ACL group:{world.team.name} (cur: other bits --- of mode 0750" in partial["message"]
    no_access = codes["no-access"]["message"]
    assert (
        f"box ({world.alice.name}: cur: other bits --- of mode 0750 (not the owner root, "
        "not in group root); needs r-x)" in no_access
    )
