"""The doveconf -n parser."""

from __future__ import annotations

from nsprov._check.doveconf import DovecotConf, major_minor

from .support import HEADER_23


class TestDovecotConf:
    """doveconf -n output of 2.3 and 2.4 parses into settings and sections."""

    def test_23(self) -> None:
        """Header version, quoted values, sections, plugins per protocol, global ACLs."""
        conf = DovecotConf.parse(
            HEADER_23 + 'first_valid_uid = 1000\nlast_valid_uid = 2000\nmail_plugins = " acl"\n'
            "maildir_stat_dirs = yes\nnamespace inbox {\n  inbox = yes\n  prefix = \n}\n"
            "plugin {\n  acl = vfile:/etc/dovecot/acls:cache_secs=300\n}\n"
            'protocol imap {\n  mail_plugins = " acl imap_acl"\n}\nprotocols = imap lmtp\n'
            "userdb {\n  driver = passwd\n}\nuserdb {\n  args = /x\n  driver = dict\n}\n}\n"
        )

        assert "2.3.19.1" == conf.version
        assert (1000, 2000, True) == (
            conf.first_valid_uid,
            conf.last_valid_uid,
            conf.maildir_stat_dirs,
        )
        assert ("imap", "lmtp") == conf.protocols
        assert {"acl", "imap_acl"} == conf.plugins("imap")
        assert {"acl"} == conf.plugins("pop3")
        assert "/etc/dovecot/acls" == conf.acl_global
        assert ["passwd", "dict"] == conf.userdb_drivers
        assert ["inbox"] == [ns.name for ns in conf.namespaces]
        assert "" == conf.namespaces[0].get("prefix", "unset")

    def test_24(self) -> None:
        """2.4's boollist mail_plugins, named userdb sections and acl_global_path."""
        conf = DovecotConf.parse(
            "# 2.4.1-4 (7d8c0e5759): /etc/dovecot/dovecot.conf\n"
            "mail_plugins {\n  acl = yes\n  quota = no\n}\nacl_global_path = /etc/dovecot/acl\n"
            "userdb passwd {\n}\n"
        )

        assert ("2.4.1", "2.4") == (conf.version, major_minor(conf.version or ""))
        assert {"acl"} == conf.plugins("imap")
        assert "/etc/dovecot/acl" == conf.acl_global
        assert ["passwd"] == conf.userdb_drivers

    def test_defaults(self) -> None:
        """Settings doveconf -n leaves out have Dovecot's defaults."""
        conf = DovecotConf.parse("first_valid_uid = junk\n")

        assert (None, 500, 0, False) == (
            conf.version,
            conf.first_valid_uid,
            conf.last_valid_uid,
            conf.maildir_stat_dirs,
        )
        assert ("imap", "pop3") == conf.protocols
        assert conf.acl_global is None
        assert major_minor("unknown") is None
