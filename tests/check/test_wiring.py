"""The post-login wiring."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov import _fast as nsprov_fast

from .support import CONFIG, IMAP_OK, NSPROV, line, make_config, wired, wiring

if TYPE_CHECKING:
    from nsprov._check.doveconf import DovecotConf
    from nsprov._config import Config


class TestWiring:
    """The post-login services of IMAP and POP3."""

    @pytest.fixture(name="config")
    def _config(self, spool: Path) -> Config:
        return make_config(spool, {"deny": {"users": ["guest"]}})

    def test_shipped_example(self, config: Config) -> None:
        """The shipped 10-master.conf passes."""
        assert [] == wiring(config, wired())

    def test_missing_pop3(self, config: Config) -> None:
        """POP3 without wiring while [deny] applies to it is an error."""
        findings = wiring(config, wired(example=line("imap", IMAP_OK)))

        assert [("wiring-missing", "error", "service pop3")] == [
            (f.code, f.severity, f.subject) for f in findings
        ]
        assert "deny rules do not apply" in findings[0].message

    def test_pop3_without_actions(self, spool: Path) -> None:
        """POP3 without wiring is fine when nsprov has nothing to do for POP3."""
        assert [] == wiring(make_config(spool), wired(example=line("imap", IMAP_OK)))

    def test_serve_mode(self, spool: Path) -> None:
        """Without post-login wiring, a dict userdb provides the namespaces."""
        conf = wired(example="userdb {\n  driver = dict\n}\n")

        assert [] == wiring(make_config(spool), conf)
        assert ["service imap"] == [
            f.subject for f in wiring(make_config(spool), wired(example=""))
        ]

    def test_fast_script(self, config: Config) -> None:
        """``python -I -S .../nsprov/_fast.py --serve=...`` is nsprov's wiring too."""
        fast = str(Path(nsprov_fast.__file__))
        python = "/opt/nsprov/bin/python"

        def conf(args: str, script: str = fast) -> DovecotConf:
            return wired(
                example=line("imap", f"{python} -I -S {script} {args} --protocol=imap")
                + line("pop3", f"{python} -I -S {script} {args} --protocol=pop3")
            )

        def found(c: DovecotConf) -> list[tuple[str, str]]:
            return [
                (f.code, f.severity) for f in wiring(config, c, executable=lambda p: p == python)
            ]

        assert [] == found(conf(f"--serve=/run/nsprov/userdb.sock --config={CONFIG}"))
        assert [("wiring-bad-arguments", "warning")] * 2 == found(conf(f"--config={CONFIG}"))
        assert [("wiring-program-missing", "error")] * 2 == found(
            conf(f"--serve=/s --config={CONFIG}", "/nowhere/nsprov/_fast.py")
        )

    @pytest.mark.parametrize("flags", ["-S", "", "-S -E"])
    def test_fast_script_not_isolated(self, config: Config, flags: str) -> None:
        """The fast path's interpreter without -I is an error; -I, alone or combined, is not."""
        fast = str(Path(nsprov_fast.__file__))
        python = "/opt/nsprov/bin/python"

        def found(interpreter: str) -> list[tuple[str, str]]:
            program = f"{interpreter} {fast} --serve=/s --config={CONFIG} --protocol=imap"
            conf = wired(example=line("imap", program), protocols="imap")
            return [
                (f.code, f.severity) for f in wiring(config, conf, executable=lambda p: p == python)
            ]

        assert [("wiring-not-isolated", "error")] == found(f"{python} {flags}".strip())
        assert [] == found(f"{python} -IS")

    @pytest.mark.parametrize(
        ("first_line", "isolated"),
        [
            ("#!/opt/nsprov/bin/python3", False),
            ("#!/usr/bin/env python3", False),
            ("#!/opt/nsprov/bin/python3 -I", True),
            ("#!/opt/nsprov/bin/python3 -IS", True),
            ("#!/bin/bash -p", True),
        ],
    )
    def test_script_not_isolated(
        self, config: Config, tmp_path: Path, first_line: str, isolated: bool
    ) -> None:
        """A hook (or an old console script) whose #! line starts Python without -I is an error."""
        hook = tmp_path / "hook"
        hook.write_text(f"{first_line}\nimport nsprov\n")
        conf = wired(example=line("imap", f"{hook} --config={CONFIG}"), protocols="imap")

        codes = [f.code for f in wiring(config, conf, executable=lambda p: True)]

        assert isolated == ("wiring-not-isolated" not in codes)

    def test_installed_command_isolated(self, config: Config) -> None:
        """The installed nsprov command (the launcher) passes."""
        installed = str(Path(sys.executable).with_name("nsprov"))
        program = f"{installed} post-login --config={CONFIG} --protocol=imap"
        conf = wired(example=line("imap", program), protocols="imap")

        assert [] == wiring(config, conf, executable=lambda p: p == installed)

    @pytest.mark.parametrize(
        ("first_line", "body", "expected"),
        [
            ("#!/bin/bash -p", "exec python -I -c 'from nsprov._main import entrypoint'", True),
            ("#!/usr/bin/env bash", "# The nsprov command\nexec python -I", True),
            ("#!/bin/bash -p", "exec /usr/bin/perl hook.pl", False),
            ("#!/opt/nsprov/bin/python -IS", "from nsprov._main import entrypoint", False),
            ("#!/bin/sh", "exec nsprov", False),
        ],
    )
    def test_bash_launcher_info(
        self, config: Config, tmp_path: Path, first_line: str, body: str, expected: bool
    ) -> None:
        """nsprov's bash launcher on the line is an info finding pointing at install-launcher."""
        program = tmp_path / "nsprov"
        program.write_text(f"{first_line}\n{body}\n")
        conf = wired(
            example=line("imap", f"{program} post-login --config={CONFIG} --protocol=imap"),
            protocols="imap",
        )

        findings = wiring(config, conf, executable=lambda p: True)

        infos = [(f.code, f.severity, f.subject) for f in findings if f.severity == "info"]
        assert ([("wiring-bash-launcher", "info", "service imap-postlogin")] * expected) == infos
        assert all(f.severity == "info" for f in findings)
        if expected:
            assert (
                f"{program} is the bash launcher: each login starts bash first (~2 ms, ~115 "
                "system calls); `nsprov install-launcher` writes a direct one"
            ) == findings[0].message
            assert f"Run '{program} install-launcher' as root" in findings[0].fix

    def test_wheel_bash_launcher_info(self, config: Config, tmp_path: Path) -> None:
        """The wheel's own scripts/nsprov is recognised; the direct launcher it becomes is not."""
        from nsprov._launcher import default_package_dir, install

        program = tmp_path / "bin" / "nsprov"
        program.parent.mkdir()
        program.write_text((Path(__file__).parents[2] / "scripts" / "nsprov").read_text())
        conf = wired(
            example=line("imap", f"{program} post-login --config={CONFIG} --protocol=imap"),
            protocols="imap",
        )

        before = [f.code for f in wiring(config, conf, executable=lambda p: True)]
        install(python=sys.executable, package_dir=default_package_dir(), target=str(program))
        after = [f.code for f in wiring(config, conf, executable=lambda p: True)]

        assert (["wiring-bash-launcher"], []) == (before, after)

    def test_protocols(self, config: Config) -> None:
        """Protocols Dovecot does not serve are not checked."""
        assert [] == wiring(config, wired(example="", protocols="lmtp"))

    def test_no_protocol_and_user(self, config: Config) -> None:
        """A missing --protocol and a non-root service user are warnings."""
        conf = wired(
            example=line("imap", f"{NSPROV} post-login --config={CONFIG}", user="nobody")
            + line("pop3", f"-d {NSPROV} post-login --config {CONFIG} --protocol=pop3")
        )

        findings = wiring(config, conf)

        assert [
            ("wiring-no-protocol", "warning", "service imap-postlogin"),
            ("wiring-service-user", "warning", "service imap-postlogin"),
        ] == [(f.code, f.severity, f.subject) for f in findings]

    def test_protocol_mismatch(self, config: Config) -> None:
        """POP3 wired to the IMAP post-login service is an error."""
        conf = wired(
            example=line("imap", IMAP_OK)
            + "service pop3 {\n  executable = pop3 -t 30 imap-postlogin\n}\n"
        )

        assert [("wiring-protocol-mismatch", "error", "service imap-postlogin")] == [
            (f.code, f.severity, f.subject) for f in wiring(config, conf)
        ]

    @pytest.mark.parametrize(
        ("program", "expected"),
        [
            (IMAP_OK.removeprefix("/usr/local/bin/"), ("wiring-relative-path", "error")),
            (IMAP_OK.replace(NSPROV, "/opt/nsprov"), ("wiring-program-missing", "error")),
            (IMAP_OK.replace("=imap", "=smtp"), ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --deadline=60", ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --serve=relative.sock", ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --help", ("wiring-bad-arguments", "error")),
            (IMAP_OK.replace(" --protocol", "  --protocol"), ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --fast", ("wiring-bad-arguments", "warning")),
            (f"{IMAP_OK} -- next", ("wiring-relative-path", "error")),
            (IMAP_OK.replace(CONFIG, "/etc/other.toml"), ("wiring-config-path", "warning")),
            (f"/usr/local/bin/hook --config={CONFIG}", ("wiring-missing", "warning")),
        ],
    )
    def test_bad_lines(self, config: Config, program: str, expected: tuple[str, str]) -> None:
        """Each malformed imap post-login line gets its code and severity."""
        conf = wired(example=line("imap", program), protocols="imap")

        assert [expected] == [(f.code, f.severity) for f in wiring(config, conf)]

    @pytest.mark.parametrize(
        ("extra", "consequence"),
        [("", "uses the default instead"), (" --on-error=deny", "denies every login")],
    )
    def test_bad_value_message(self, config: Config, extra: str, consequence: str) -> None:
        """A bad value names the option, and says what post-login does about it."""
        conf = wired(example=line("imap", f"{IMAP_OK} --deadline=abc{extra}"), protocols="imap")

        [finding] = wiring(config, conf)

        assert "--deadline must be a number, got 'abc'" in finding.message
        assert consequence in finding.message

    def test_not_script_login(self, config: Config) -> None:
        """A post-login service that is not script-login is a warning."""
        conf = wired(
            example="service imap {\n  executable = imap imap-postlogin\n}\n"
            "service imap-postlogin {\n  executable = /usr/local/bin/other\n}\n",
            protocols="imap",
        )

        assert [("wiring-missing", "warning")] == [
            (f.code, f.severity) for f in wiring(config, conf)
        ]

    def test_socket_without_service(self, config: Config) -> None:
        """A post-login socket no service provides fails every login."""
        conf = wired(
            example="service imap {\n  executable = imap -D  nowhere\n}\n", protocols="imap"
        )

        assert [("wiring-missing", "error")] == [(f.code, f.severity) for f in wiring(config, conf)]

    def test_listener_of_another_name(self, config: Config) -> None:
        """The post-login service may be found by its unix_listener's name."""
        conf = wired(
            example="service imap {\n  executable = imap pl\n}\n"
            f"service post {{\n  executable = script-login {IMAP_OK}\n"
            "  unix_listener pl {\n  }\n}\n",
            protocols="imap",
        )

        assert [] == wiring(config, conf)


class TestFixTexts:
    """Wiring fixes name what prints the blocks, never a file an installed system lacks."""

    @pytest.fixture(name="config")
    def _config(self, spool: Path) -> Config:
        return make_config(spool, {"deny": {"users": ["guest"]}})

    @pytest.mark.parametrize(
        "conf_text",
        [
            "",  # no service imap at all
            "service imap {\n  executable = imap -D  nowhere\n}\n",  # no post-login service
            (
                "service imap {\n  executable = imap imap-postlogin\n}\n"
                "service imap-postlogin {\n  executable = /usr/local/bin/hook\n"
                "  unix_listener imap-postlogin {\n  }\n}\n"
            ),  # not script-login
        ],
    )
    def test_fix_prints_the_snippet(self, config: Config, conf_text: str) -> None:
        """Every wiring-missing fix gives the printer's command line, with this config's path."""
        findings = wiring(config, wired(example=conf_text, protocols="imap"))

        assert findings
        for f in findings:
            assert "examples/" not in f.fix
            assert "/path/to/" not in f.fix
            assert (
                f"nsprov post-login --print-dovecot-config --dialect=2.3 --protocol=imap "
                f"--config={CONFIG}" in f.fix
            )


def test_printed_wiring_passes_check(spool: Path) -> None:
    """What 'nsprov post-login --print-dovecot-config' prints is clean for check's wiring rules."""
    from nsprov._cli.postlogin import dovecot_config

    config = make_config(spool, {"deny": {"users": ["guest"]}})
    printed = dovecot_config(dialect="2.3", nsprov=NSPROV, config=CONFIG)

    assert [] == wiring(config, wired(example=printed))


class TestServeProbe:
    """The post-login --serve socket is probed: a server that does not answer is a warning."""

    CONF = (
        "protocols = imap pop3\n"
        "service imap {\n  executable = imap imap-postlogin\n}\n"
        "service imap-postlogin {\n"
        "  executable = script-login /usr/bin/nsprov post-login --protocol=imap "
        "--serve=/run/nsprov/serve.sock\n"
        "  user = root\n  unix_listener imap-postlogin {\n  }\n}\n"
        "service pop3 {\n  executable = pop3 pop3-postlogin\n}\n"
        "service pop3-postlogin {\n"
        "  executable = script-login /usr/bin/nsprov post-login --protocol=pop3\n"
        "  user = root\n  unix_listener pop3-postlogin {\n  }\n}\n"
    )

    def test_sockets_found(self) -> None:
        """Only the line that passes --serve is probed."""
        from nsprov._check.doveconf import DovecotConf
        from nsprov._check.wiring import serve_sockets

        conf = DovecotConf.parse(self.CONF)

        assert [("service imap-postlogin", "/run/nsprov/serve.sock")] == serve_sockets(conf)

    def test_down_is_a_warning(self) -> None:
        """A probe that fails gives wiring-serve-down with the reason; one that answers, nothing."""
        from nsprov._check.doveconf import DovecotConf
        from nsprov._check.wiring import check_serve_probes

        conf = DovecotConf.parse(self.CONF)
        down = check_serve_probes(conf, lambda _s: "connection refused")
        up = check_serve_probes(conf, lambda _s: None)

        assert [("wiring-serve-down", "warning", "service imap-postlogin")] == [
            (f.code, f.severity, f.subject) for f in down
        ]
        assert "connection refused" in down[0].message
        assert [] == up
        assert [] == check_serve_probes(conf, None)

    def test_real_socket_nobody_listens(self, tmp_path: Path) -> None:
        """The real probe on a path with no server says why."""
        from nsprov._check.gather import probe_serve

        assert probe_serve(str(tmp_path / "none.sock"))
