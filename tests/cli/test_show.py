"""``nsprov show``: the dry run's output formats, options and errors."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from nsprov._cli import main

from ..strategies import HOSTILE

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(name="setup")
def _setup(base: Path) -> Path:
    """A spool under the shared ``base`` fixture: sales (0755), secret (0700), pct%u, bad\\xff."""
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    for name, mode in (("sales", 0o755), ("secret", 0o700), ("pct%u", 0o755)):
        box = spool / name
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True)
        box.chmod(mode)
    (spool / os.fsdecode(b"bad\xff")).mkdir()
    cfg = base / "nsprov.toml"
    cfg.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    return base


def show(setup: Path, *extra: str) -> list[str]:
    return [
        "show",
        "--user",
        "nobody",
        "--config",
        str(setup / "nsprov.toml"),
        "--uid",
        "70001",
        "--gid",
        "70001",
        "--groups",
        "",
        "--home",
        "/home/alice",
        *extra,
    ]


class TestShow:
    """nsprov show: a dry run with several output formats."""

    def test_json_shape(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The JSON document has the documented shape."""
        assert 0 == main([*show(setup), "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert {"user", "dialect", "namespaces", "environment", "skipped"} <= set(doc)
        assert ("nobody", "2.3") == (doc["user"], doc["dialect"])
        names = [n["entry"] for n in doc["namespaces"]]
        assert ["pct%u", "sales"] == names
        sales = doc["namespaces"][1]
        assert {
            "name",
            "type",
            "prefix",
            "separator",
            "location",
            "list",
            "subscriptions",
            "spool",
            "entry",
        } <= set(sales)
        assert sales["name"].startswith("s-sal-")
        assert "Shared/sales/" == sales["prefix"]
        assert sales["location"].startswith(
            f"maildir:{setup}/spool/sales:INDEX=/home/alice/.nsprov/"
        )
        assert f"NAMESPACE/{sales['name'].upper()}/PREFIX" in doc["environment"]
        skipped = {s["entry"]: s["reason"] for s in doc["skipped"]}
        assert {"secret": "no-access", "bad\\xff": "unservable-name"} == skipped

    def test_table_explain(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--explain lists each skipped entry with its reason."""
        assert 0 == main([*show(setup), "--explain"])

        out = capsys.readouterr().out
        assert "Shared/sales/" in out
        assert "secret: no-access" in out

    def test_explain_escapes_hostile_names(
        self, setup: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Entry names with terminal controls are shown escaped: no ESC, CR or C1 reaches the terminal."""
        spool = setup / "spool"
        for name in HOSTILE:
            (spool / name).mkdir(mode=0o700)

        assert 0 == main([*show(setup), "--explain"])

        lines = capsys.readouterr().out.rstrip("\n").split("\n")  # not splitlines: CR, C1 split too
        assert all(line.isprintable() for line in lines), [
            line for line in lines if not line.isprintable()
        ]
        assert any("/\\x1b]0;owned\\x07: unservable-name" in line for line in lines)
        assert any("/line\\x0dover: " in line for line in lines)

    def test_table_summary(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --explain the table counts skipped entries."""
        assert 0 == main(show(setup))

        assert "2 entries skipped" in capsys.readouterr().out

    def test_env(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--format=env prints KEY=VALUE lines."""
        assert 0 == main([*show(setup), "--format=env"])

        lines = capsys.readouterr().out.splitlines()
        assert any(line.startswith("NAMESPACE=s-pct-") for line in lines)
        assert any(
            line.startswith("USERDB_KEYS=UID GID HOME SYSTEM_GROUPS_USER NAMESPACE ")
            for line in lines
        )

    def test_conf(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--format=conf prints namespace blocks with % doubled."""
        assert 0 == main([*show(setup), "--format=conf"])

        out = capsys.readouterr().out
        assert 'prefix = "Shared/pct%%u/"' in out
        assert 'type = "public"' in out

    def test_no_side_effects(self, setup: Path) -> None:
        """show creates no directories."""
        home = setup / "home"
        assert 0 == main([*show(setup)[:-1], str(home)])

        assert not home.exists()

    def test_bad_config(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config error is exit 1 with one line per problem."""
        (setup / "nsprov.toml").write_text("[[spool]]\nbogus = 1\n")

        assert 1 == main(show(setup))
        err = capsys.readouterr().err
        assert "spool[1].bogus: unknown key" in err
        assert "spool[1].path: required key missing" in err

    def test_untrusted_config(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config others may write, or a FIFO, is refused with one line naming it and the rule."""
        cfg = setup / "nsprov.toml"
        cfg.chmod(0o666)
        assert 1 == main(show(setup))
        writable = capsys.readouterr().err
        cfg.unlink()
        os.mkfifo(cfg)
        assert 1 == main(show(setup))
        fifo = capsys.readouterr().err

        assert writable.startswith(f"nsprov: error: {cfg}: config file not trusted: {cfg} is")
        assert "nsprov uses a file only if" in writable
        assert 1 == writable.count("\n")
        assert "is not a regular file (a FIFO)" in fifo

    def test_unknown_user(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown user without --uid/--gid is exit 1."""
        assert 1 == main(
            ["show", "--user", "no-such-user-x", "--config", str(setup / "nsprov.toml")]
        )
        assert "unknown user" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("option", "message"),
        [
            ("--groups=1,x", "expected comma-separated gids, got '1,x'"),
            ("--deadline=0", "expected seconds > 0, got '0'"),
            ("--deadline=soon", "expected seconds > 0, got 'soon'"),
        ],
    )
    def test_bad_option_values(
        self, option: str, message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A malformed --groups or a --deadline not above 0 is a usage error naming the value."""
        with pytest.raises(SystemExit) as info:
            main(["show", "--user=root", option])

        assert 2 == info.value.code
        assert message in capsys.readouterr().err

    def test_groups_override(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--groups sets the supplementary gids the verdicts use: a group-only box is served."""
        secret = setup / "spool" / "secret"
        os.chown(secret, -1, 4)
        secret.chmod(0o750)
        served = []
        for groups in ("", "4,5,"):
            assert 0 == main([*show(setup, "--format=json"), f"--groups={groups}"])
            doc = json.loads(capsys.readouterr().out)
            served.append("Shared/secret/" in {ns["prefix"] for ns in doc["namespaces"]})

        assert [False, True] == served


def test_virtual_user_note(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user whose uid belongs to another account gets a note about virtual users."""
    argv = show(setup)
    argv[argv.index("--uid") + 1] = "0"

    assert 0 == main(argv)
    assert "virtual users" in capsys.readouterr().err


class TestTablePolish:
    """Every path shown as configured, the resolved one beside it; group names beside gids."""

    def test_paths_as_configured(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A spool configured through a symbolic link: served and skipped read the same way."""
        link = setup / "link"
        link.symlink_to(setup / "spool")
        cfg = setup / "linked.toml"
        cfg.write_text(f'[[spool]]\npath = "{link}"\nprefix = "Shared/{{name}}/"\n')
        argv = show(setup, "--explain")
        argv[argv.index("--config") + 1] = str(cfg)

        assert 0 == main(argv)

        out = capsys.readouterr().out
        real = setup / "spool"
        assert f"  {link}/sales ({real}/sales)\n" in out
        assert f"skipped {link}/secret ({real}/secret): no-access" in out

    def test_no_duplicate_when_equal(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A spool that is its real path shows each path once."""
        assert 0 == main([*show(setup), "--explain"])

        out = capsys.readouterr().out
        spool = setup / "spool"
        assert f"  {spool}/sales\n" in out
        assert f"skipped {spool}/secret: no-access" in out

    def test_group_names(self, setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Gids with a group show its name, like id(1); unknown gids stay bare."""
        import grp

        root = grp.getgrgid(0).gr_name
        other = min((g for g in grp.getgrall() if 0 < g.gr_gid < 70000), key=lambda g: g.gr_gid)
        argv = show(setup)
        argv[argv.index("--gid") + 1] = "0"
        argv[argv.index("--groups") + 1] = f"{other.gr_gid},70999"

        assert 0 == main(argv)

        expected = f"gid 0({root}), groups {other.gr_gid}({other.gr_name}),70999, "
        assert expected in capsys.readouterr().out
