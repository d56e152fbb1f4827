"""Checks against Dovecot's settings."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._check.doveconf import DovecotConf
from nsprov._check.dovecot import (
    acl_required,
    check_acl_plugin,
    check_conf_namespaces,
    check_mail_driver,
    check_prefix_overlap,
    check_separator,
    check_version,
)
from nsprov._check.report import run_checks
from nsprov._check.structure import scan_structure
from nsprov._names import entry_id

from .support import DOVECONF_OK, HEADER_23, INBOX_EMPTY, codes, maildir, make_config, world

if TYPE_CHECKING:
    from pathlib import Path


class TestVersion:
    """The installed Dovecot against [dovecot] version."""

    @pytest.mark.parametrize(
        ("dialect", "version", "expected"),
        [
            ("2.3", "2.3", set()),
            ("2.4", "2.3", {("dialect-mismatch", "error")}),
            ("2.3", "2.4", {("dialect-mismatch", "error")}),
            ("2.3", "2.2", {("dovecot-version-unsupported", "warning")}),
            ("2.3", None, {("dovecot-version-unknown", "info")}),
        ],
    )
    def test_versions(
        self, spool: Path, dialect: str, version: str | None, expected: set[tuple[str, str]]
    ) -> None:
        """Only a matching 2.3 or 2.4 passes silently."""
        config = make_config(spool, {"dovecot": {"version": dialect}})

        assert expected == codes(check_version(config, version, "test"))


class TestSeparator:
    """Every listed Dovecot namespace must use nsprov's separator."""

    @pytest.mark.parametrize(
        ("conf", "mismatches"),
        [
            ("namespace inbox {\n  inbox = yes\n  separator = /\n}\n", []),
            ("namespace inbox {\n  inbox = yes\n  separator = .\n}\n", ["namespace inbox"]),
            (
                "mail_location = maildir:~/Maildir\nnamespace inbox {\n  inbox = yes\n}\n",
                ["namespace inbox"],
            ),
            ("mail_location = maildir:~/Maildir:LAYOUT=fs\nnamespace inbox {\n}\n", []),
            ("mail_location = mdbox:~/mdbox\n", []),
            ("mail_location = maildir:~/Maildir\n", ["namespace (implicit)"]),
            ("mail_driver = maildir\nnamespace inbox {\n  inbox = yes\n}\n", ["namespace inbox"]),
            ("mail_driver = maildir\nmailbox_list_layout = fs\nnamespace inbox {\n}\n", []),
            ("namespace inbox {\n  inbox = yes\n}\n", []),
            (
                (
                    "namespace inbox {\n  separator = /\n}\nnamespace x {\n  separator = .\n"
                    "  list = no\n}\nnamespace y {\n  separator = .\n  disabled = yes\n}\n"
                ),
                [],
            ),
        ],
    )
    def test_separators(self, spool: Path, conf: str, mismatches: list[str]) -> None:
        """Explicit separators and storage defaults (Maildir++ '.', else '/') are compared."""
        findings = check_separator(make_config(spool), DovecotConf.parse(conf))

        assert mismatches == [f.subject for f in findings]
        assert {"separator-mismatch"} >= {f.code for f in findings}

    def test_unlisted_spools(self, spool: Path) -> None:
        """Spools with list = "no" need no common separator."""
        conf = DovecotConf.parse("namespace inbox {\n  separator = .\n}\n")

        assert [] == check_separator(make_config(spool, list="no", prefix="Shared/{name}"), conf)


class TestConfNamespaces:
    """Dovecot namespaces that collide with or overlap nsprov's."""

    def test_collisions(self, spool: Path) -> None:
        """A taken prefix is an error, a prefix in config_prefixes is not, case twins warn."""
        maildir(spool / "sales")
        maildir(spool / "team")
        maildir(spool / "misc")
        name = "s-" + entry_id(os.fsencode(str(spool)), b"misc")[0]
        conf = DovecotConf.parse(
            "namespace clash {\n  prefix = Shared/sales/\n}\n"
            "namespace listed {\n  prefix = Shared/team/\n}\n"
            "namespace twin {\n  prefix = shared/Sales/\n}\n"
            f"namespace {name} {{\n  prefix = Other/\n}}\n"
        )
        config = make_config(spool, {"dovecot": {"config_prefixes": ["Shared/team/"]}})

        findings = check_conf_namespaces(config, conf, scan_structure(make_config(spool)))

        assert [
            ("namespace-collision", "error", "namespace clash"),
            ("case-collision", "warning", "namespace twin"),
            ("namespace-collision", "error", f"namespace {name}"),
        ] == [(f.code, f.severity, f.subject) for f in findings]

    def test_nested(self, spool: Path) -> None:
        """A namespace around nsprov's prefixes, or serving a spool directory, is reported."""
        maildir(spool / "sales")
        conf = DovecotConf.parse(
            "namespace around {\n  prefix = Shared/\n}\n"
            f"namespace static {{\n  prefix = Public/\n  location = maildir:{spool}/sales\n}}\n"
            f"namespace static24 {{\n  prefix = P24/\n  mail_path = {spool}\n}}\n"
            "namespace bad {\n  prefix = B/\n  location = nonsense\n}\n"
            "namespace elsewhere {\n  prefix = E/\n  location = maildir:/srv/other\n}\n"
        )
        config = make_config(spool)

        findings = check_conf_namespaces(config, conf, scan_structure(config))

        assert [
            ("namespace-nested", "namespace around"),
            ("namespace-nested", "namespace static"),
            ("namespace-nested", "namespace static24"),
        ] == [(f.code, f.subject) for f in findings]

    def test_private_namespace(self, spool: Path) -> None:
        """subscribe = true needs the private namespace to exist in Dovecot's configuration."""
        config = make_config(spool, subscribe=True, list="children")
        missing = DovecotConf.parse("namespace mine {\n  inbox = yes\n}\n")
        present = DovecotConf.parse("namespace inbox {\n  inbox = yes\n}\n")

        assert [("private-namespace-missing", "warning")] == [
            (f.code, f.severity) for f in check_conf_namespaces(config, missing, [])
        ]
        assert [] == check_conf_namespaces(config, present, [])


class TestPrefixOverlap:
    """Prefix templates against Dovecot's namespaces, independent of the entries."""

    @pytest.mark.parametrize(
        ("prefix", "doveconf", "expected"),
        [
            ("Shared/{name}/", INBOX_EMPTY, []),
            ("{name}/", INBOX_EMPTY, [("private-overlap", "error")]),
            ("{name}/", "", [("private-overlap", "error")]),
            (
                "{name}/",
                INBOX_EMPTY.replace("prefix = ", "prefix = INBOX/"),
                [("namespace-nested", "warning")],
            ),
            (
                "INBOX/{name}/",
                INBOX_EMPTY.replace("prefix = ", "prefix = INBOX/"),
                [("private-overlap", "error")],
            ),
            (
                "Shared/{name}/",
                INBOX_EMPTY + "namespace pub {\n  type = public\n  prefix = Shared/\n}\n",
                [("namespace-nested", "warning")],
            ),
            (
                "Shared{sep}{name}{sep}",
                INBOX_EMPTY + "namespace pub {\n  type = public\n  prefix = Shared/x/y/\n}\n",
                [("namespace-nested", "warning")],
            ),
            (
                "Shared/{name}/",
                INBOX_EMPTY
                + "namespace pub {\n  type = public\n  prefix = Public/\n}\n"
                + "namespace old {\n  prefix = Shared/\n  disabled = yes\n}\n",
                [],
            ),
        ],
    )
    def test_overlaps(
        self, spool: Path, prefix: str, doveconf: str, expected: list[tuple[str, str]]
    ) -> None:
        """An equal private prefix is an error; other nesting a warning; disabled ones do not count."""
        config = make_config(spool, prefix=prefix, allow_private_overlap=True)

        findings = check_prefix_overlap(config, DovecotConf.parse(doveconf))

        assert expected == [(f.code, f.severity) for f in findings]
        assert all(f.subject == "spool[1].prefix" for f in findings)

    def test_sent_message(self, spool: Path) -> None:
        """The message names the spool, the namespace and what goes wrong."""
        config = make_config(spool, prefix="{name}/", allow_private_overlap=True)

        [finding] = check_prefix_overlap(config, DovecotConf.parse(INBOX_EMPTY))

        assert f"spool {spool}: prefix '{{name}}/'" in finding.message
        assert "Sent" in finding.message
        assert "namespace inbox (prefix '')" in finding.message

    def test_in_run_checks(self, spool: Path) -> None:
        """run_checks reports the overlap even with an empty spool."""
        config = make_config(spool, prefix="{name}/", allow_private_overlap=True)
        conf = DovecotConf.parse(DOVECONF_OK)

        report = run_checks(world(spool, config=config, doveconf=conf, dovecot_version="2.3"))

        assert ("private-overlap", "error") in report.codes()


class TestAclPlugin:
    """[dovecot] acl_plugin against mail_plugins."""

    def test_24_without_flag(self, spool: Path) -> None:
        """On 2.4, the ACL plugin without acl_plugin = true is an error."""
        conf = DovecotConf.parse("mail_plugins {\n  acl = yes\n}\n")
        config = make_config(spool, {"dovecot": {"version": "2.4"}})

        assert [("acl-plugin-setting", "error")] == [
            (f.code, f.severity) for f in check_acl_plugin(config, conf, acl_plugin=False)
        ]
        assert [] == check_acl_plugin(config, conf, acl_plugin=True)

    def test_flag_without_plugin(self, spool: Path) -> None:
        """acl_plugin = true without the plugin is a note."""
        conf = DovecotConf.parse("mail_plugins = quota\n")

        assert [("acl-plugin-setting", "info")] == [
            (f.code, f.severity)
            for f in check_acl_plugin(make_config(spool), conf, acl_plugin=True)
        ]

    def test_required(self) -> None:
        """dovecot-acl files are required with the plugin and no global ACLs."""
        assert acl_required(DovecotConf.parse("mail_plugins = acl\n"))
        assert not acl_required(DovecotConf.parse("mail_plugins = acl\nacl_global_path = /a\n"))
        assert not acl_required(DovecotConf.parse(""))
        assert not acl_required(None)


class TestMailDriver:
    """[dovecot] global_mail_driver against dovecot.conf's mail_driver."""

    @pytest.mark.parametrize(
        ("dialect", "driver", "conf", "expected"),
        [
            ("2.4", "maildir", "mail_driver = maildir\n", []),
            ("2.4", "maildir", "mail_driver = sdbox\n", [("mail-driver-mismatch", "error")]),
            ("2.4", "maildir", "", [("mail-driver-mismatch", "error")]),
            ("2.4", None, "mail_driver = sdbox\n", []),
            ("2.3", "maildir", "mail_driver = sdbox\n", []),
        ],
    )
    def test_drivers(
        self,
        spool: Path,
        dialect: str,
        driver: str | None,
        conf: str,
        expected: list[tuple[str, str]],
    ) -> None:
        """Only a 2.4 global_mail_driver that dovecot.conf does not set is an error."""
        dovecot = {"version": dialect} | ({"global_mail_driver": driver} if driver else {})
        config = make_config(spool, {"dovecot": dovecot})

        findings = check_mail_driver(config, DovecotConf.parse(conf))

        assert expected == [(f.code, f.severity) for f in findings]


class TestIdentity:
    """[identity] against doveconf's group range and mail_access_groups."""

    @pytest.mark.parametrize(
        ("identity", "conf", "expected"),
        [
            ({}, "", []),
            ({}, "first_valid_uid = 1000\nlast_valid_uid = 60000\n", []),
            (
                {"first_valid_gid": 100, "last_valid_gid": 2000, "mail_access_groups": ["mail"]},
                "first_valid_gid = 100\nlast_valid_gid = 2000\nmail_access_groups = mail\n",
                [],
            ),
            ({"mail_access_groups": ["b", "a"]}, "mail_access_groups = a, b\n", []),
            ({}, "first_valid_gid = 1000\n", ["[identity] first_valid_gid"]),
            ({}, "last_valid_gid = 5000\n", ["[identity] last_valid_gid"]),
            ({"last_valid_gid": 5000}, "", ["[identity] last_valid_gid"]),
            ({}, "mail_access_groups = mail\n", ["[identity] mail_access_groups"]),
            (
                {"mail_access_groups": ["mail"], "first_valid_gid": 0},
                "",
                ["[identity] first_valid_gid", "[identity] mail_access_groups"],
            ),
        ],
    )
    def test_drift(
        self, spool: Path, identity: dict[str, Any], conf: str, expected: list[str]
    ) -> None:
        """Each setting that differs from Dovecot's (or its default) is one error."""
        config = make_config(spool, {"identity": identity})
        doveconf = DovecotConf.parse(HEADER_23 + conf)

        report = run_checks(world(spool, config=config, dovecot_version="2.3", doveconf=doveconf))

        drift = [f for f in report.findings if f.code == "identity-mismatch"]
        assert expected == [f.subject for f in drift]
        assert all(f.severity == "error" for f in drift)
        if drift:
            assert "Dovecot's" in drift[0].message
