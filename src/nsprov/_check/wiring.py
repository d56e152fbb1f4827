"""Checks of the post-login wiring: the services, the script-login chain, nsprov's own options."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._defaults import DEFAULT_CONFIG_PATH
from .findings import Finding, _f

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._config import Config
    from .._postlogin import Options
    from .doveconf import ConfSection, DovecotConf


_SERVICE_OPTIONS_WITH_VALUE = frozenset({"-t", "-c", "-i", "-o"})


def _socket_of(executable: str) -> str | None:
    """The post-login socket of ``executable = imap [-t N] imap-postlogin``."""
    tokens = executable.split(" ")
    i = 1
    while i < len(tokens):
        token = tokens[i]
        if not token:
            i += 1
        elif token.startswith("-"):
            i += 2 if token in _SERVICE_OPTIONS_WITH_VALUE else 1
        else:
            return os.path.basename(token)
    return None


def _post_login_service(conf: DovecotConf, socket: str) -> ConfSection | None:
    services = conf.services
    if socket in services:
        return services[socket]
    for service in services.values():
        if any(listener.name == socket for listener in service.children("unix_listener")):
            return service
    return None


def check_wiring(
    config: Config,
    conf: DovecotConf,
    *,
    config_path: str,
    executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK),
) -> list[Finding]:
    """The post-login services of IMAP and POP3: present, calling nsprov right, as root.

    With a zero-fork route wired (a Lua or dict userdb), a protocol without
    post-login is no ``wiring-missing``: :mod:`~nsprov._check.routes` says what
    that route cannot run (``route-actions``).
    """
    serve_wired = any(d in {"dict", "lua"} for d in conf.userdb_drivers)
    out: list[Finding] = []
    for protocol in ("imap", "pop3"):
        if protocol in conf.protocols:
            out += _protocol_wiring(
                config, conf, protocol, config_path, executable, serve_wired=serve_wired
            )
    return out


def _protocol_wiring(
    config: Config,
    conf: DovecotConf,
    protocol: str,
    config_path: str,
    executable: Callable[[str], bool],
    *,
    serve_wired: bool,
) -> list[Finding]:
    """The service of *protocol* and its post-login service."""
    out: list[Finding] = []
    actions: tuple[str, ...] = getattr(config.actions, protocol)
    service = conf.services.get(protocol)
    socket = _socket_of(service.get("executable")) if service is not None else None
    example = (
        "the blocks that 'nsprov post-login --print-dovecot-config "
        f"--dialect={config.dialect} --protocol={protocol} --config={config_path}' prints"
    )
    if socket is None:
        if actions and not serve_wired:
            deny = " (its deny rules do not apply)" if "deny" in actions else ""
            out.append(
                _f(
                    "error",
                    "wiring-missing",
                    f"service {protocol}",
                    f"{protocol} logins run no post-login script{deny}, but the "
                    f"configuration runs {', '.join(actions)} for {protocol}",
                    f"Add the service {protocol} and service {protocol}-postlogin blocks of "
                    f"{example}.",
                )
            )
        return out
    post = _post_login_service(conf, socket)
    if post is None:
        out.append(
            _f(
                "error",
                "wiring-missing",
                f"service {protocol}",
                f"service {protocol} hands logins to the post-login socket {socket}, but no "
                f"service provides it: every {protocol} login fails",
                f"Add a service {socket} block as in {example}.",
            )
        )
        return out
    return _post_service_wiring(protocol, post, example, config_path, executable)


def _post_service_wiring(
    protocol: str,
    post: ConfSection,
    example: str,
    config_path: str,
    executable: Callable[[str], bool],
) -> list[Finding]:
    """The post-login service *post* of *protocol*: script-login, the nsprov chain, root."""
    out: list[Finding] = []
    subject = f"service {post.name}"
    tokens = post.get("executable").split(" ")
    if os.path.basename(tokens[0]) != "script-login":
        out.append(
            _f(
                "warning",
                "wiring-missing",
                subject,
                f"service {post.name} runs {tokens[0]!r}, not script-login: nsprov is not "
                f"called for {protocol}",
                f"Use the executable = script-login … line of {example}.",
            )
        )
        return out
    programs = tokens[1:]
    while programs and programs[0].startswith("-"):
        programs = programs[1:]  # script-login's own -d
    at = next((i for i in range(len(programs) - 1) if programs[i + 1] == "post-login"), None)
    fast = next((i for i, t in enumerate(programs) if i and t.endswith("/nsprov/_fast.py")), None)
    out += _not_isolated(post, programs, fast)
    if at is None and fast is not None:
        # python -I -S /path/to/nsprov/_fast.py --serve=... : the interpreter is the program.
        out += _check_chain(
            protocol, post, programs[0], programs[fast + 1 :], config_path, executable
        )
        out += _check_fast_script(post, programs[fast], programs[fast + 1 :])
    elif at is None:
        out.append(
            _f(
                "warning",
                "wiring-missing",
                subject,
                f"the post-login chain of {protocol} ({' '.join(programs)}) does not run "
                "nsprov post-login",
                f"Add /path/to/nsprov post-login --config={config_path} --protocol={protocol} "
                "to the executable line (a hook script calling nsprov.run_hook needs no "
                "change: then ignore this).",
            )
        )
        return out
    else:
        out += _check_chain(
            protocol, post, programs[at], programs[at + 2 :], config_path, executable
        )
        out += _bash_launcher(post, programs[at])
    user = post.get("user")
    if user not in {"", "root", "0"}:
        out.append(
            _f(
                "warning",
                "wiring-service-user",
                subject,
                f"service {post.name} runs as {user}: nsprov then cannot stat spool entries "
                "that user cannot search, nor become each user to create the index "
                "directories in their homes",
                f"Remove the user = line from service {post.name} (the default, root, is "
                "what nsprov expects; it evaluates permissions for the user itself).",
            )
        )
    return out


def _isolated(flags: Sequence[str]) -> bool:
    """Whether Python's command-line *flags* include ``-I`` (alone or combined, ``-IS``)."""
    return any(f.startswith("-") and not f.startswith("--") and "I" in f for f in flags)


def _not_isolated(post: ConfSection, programs: Sequence[str], fast: int | None) -> list[Finding]:
    """The chain's first program runs Python as root without ``-I``: userdb fields can run code.

    Either an interpreter on the line (``python -S .../_fast.py``) or a script whose
    ``#!`` line names Python without ``-I`` (a hook, or the console script of an nsprov
    from before the launcher).  Unreadable programs are left to the other checks.
    """
    if not programs:
        return []
    program = programs[0]
    if fast is not None:
        flags: Sequence[str] | None = programs[1:fast]
    else:
        try:
            with open(program, "rb") as f:
                first = f.readline(256)
        except OSError:
            return []
        words = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
        named = words and "python" in os.path.basename(words[0])
        env_python = len(words) > 1 and words[0].endswith("/env") and "python" in words[-1]
        flags = words[1:] if named else None
        if env_python:
            flags = []
    if flags is None or _isolated(flags):
        return []
    return [
        _f(
            "error",
            "wiring-not-isolated",
            f"service {post.name}",
            f"{program} starts Python without -I, as root with every userdb field in its "
            "environment: a field pythonpath=... (PYTHONPATH) makes it import code from there",
            "Reinstall nsprov (its nsprov command starts python -I), add -I to the "
            "interpreter on the executable line, or to the #! line of the hook script.",
        )
    ]


def _bash_launcher(post: ConfSection, program: str) -> list[Finding]:
    """``wiring-bash-launcher``: the nsprov on the line is the wheel's bash launcher.

    Safe, but each login runs bash before Python; ``nsprov install-launcher``
    writes the direct launcher (``#!PYTHON -IS``) in its place.  An unreadable
    program is left to the other checks.
    """
    try:
        with open(program, "rb") as f:
            head = f.read(4096)
    except OSError:
        return []
    words = head.split(b"\n", 1)[0][2:].split() if head.startswith(b"#!") else []
    bash = bool(words) and (
        os.path.basename(words[0]) == b"bash"
        or (os.path.basename(words[0]) == b"env" and words[1:2] == [b"bash"])
    )
    if not bash or b"nsprov" not in head:
        return []
    return [
        _f(
            "info",
            "wiring-bash-launcher",
            f"service {post.name}",
            f"{program} is the bash launcher: each login starts bash first (~2 ms, ~115 "
            "system calls); `nsprov install-launcher` writes a direct one",
            f"Run '{program} install-launcher' as root: it writes bin/nsprov beside nsprov's "
            "Python as '#!PYTHON -IS' (the Debian package's /usr/bin/nsprov is one already). "
            "A pip upgrade of nsprov puts the bash launcher back: run it again after one.",
        )
    ]


def _check_fast_script(post: ConfSection, script: str, args: Sequence[str]) -> list[Finding]:
    """The ``_fast.py`` form of the wiring: the script must exist and --serve be given."""
    subject = f"service {post.name}"
    if not os.path.isfile(script):
        return [
            _f(
                "error",
                "wiring-program-missing",
                subject,
                f"{script} does not exist: every login on service {post.name} fails",
                "Give the path that python -c 'import nsprov._fast as m; print(m.__file__)' "
                "prints with the interpreter on the line.",
            )
        ]
    if not any(a == "--serve" or a.startswith("--serve=") for a in args):
        return [
            _f(
                "warning",
                "wiring-bad-arguments",
                subject,
                f"{script} without --serve always re-runs as the full nsprov post-login: "
                "one more interpreter start per login",
                "Add --serve=SOCKET, or call nsprov post-login directly.",
            )
        ]
    return []


def _check_chain(
    protocol: str,
    post: ConfSection,
    program: str,
    args: Sequence[str],
    config_path: str,
    executable: Callable[[str], bool],
) -> list[Finding]:
    subject = f"service {post.name}"
    out = _program_findings(protocol, subject, program, executable)
    if "" in args:
        out.append(
            _f(
                "error",
                "wiring-bad-arguments",
                subject,
                f"the executable line of service {post.name} has two spaces in a row: Dovecot "
                "passes an empty argument, which nsprov takes for the next program to run",
                "Separate the arguments by single spaces.",
            )
        )
        return out
    parsed, refusal, found = _option_findings(post, subject, args)
    out += found
    bad = parsed.bad if parsed is not None else []
    out += _next_program_findings(subject, parsed.next[:-1] if parsed is not None else [])
    if refusal is None and not any(name == "protocol" for name, _ in bad):
        out += _protocol_findings(protocol, post, subject, parsed)
    wired_config = parsed.config if parsed is not None else DEFAULT_CONFIG_PATH
    if os.path.realpath(wired_config) != os.path.realpath(config_path):
        out.append(
            _f(
                "warning",
                "wiring-config-path",
                subject,
                f"service {post.name} runs nsprov with {wired_config}, but this check read "
                f"{config_path}",
                f"Check the wired file (nsprov check --config={wired_config}), or point "
                "--config= on the executable line at this one.",
            )
        )
    return out


def _program_findings(
    protocol: str, subject: str, program: str, executable: Callable[[str], bool]
) -> list[Finding]:
    """The first program of the chain: an absolute path to an executable."""
    out: list[Finding] = []
    if not program.startswith("/"):
        out.append(
            _f(
                "error",
                "wiring-relative-path",
                subject,
                f"{program!r} is not an absolute path: script-login looks for it in Dovecot's "
                "libexec directory (the post-login environment has no PATH), and the login fails",
                f"Give the absolute path, e.g. /usr/local/bin/nsprov (found by: command -v {program}).",
            )
        )
    elif not executable(program):
        out.append(
            _f(
                "error",
                "wiring-program-missing",
                subject,
                f"{program} does not exist or is not executable: every {protocol} login fails",
                "Correct the path, or install nsprov there (ln -s /opt/nsprov/bin/nsprov "
                "/usr/local/bin/nsprov).",
            )
        )
    return out


def _option_findings(
    post: ConfSection, subject: str, args: Sequence[str]
) -> tuple[Options | None, str | None, list[Finding]]:
    """nsprov's options on the line, as post-login parses them: parsed, why refused, findings."""
    from .._postlogin import UsageError, parse_args  # noqa: PLC0415

    out: list[Finding] = []
    unknown: list[str] = []
    script_login = "/usr/lib/dovecot/script-login"
    try:
        parsed = parse_args([*args, script_login], unknown=unknown)
    except UsageError as e:
        refusal: str | None = str(e)
        parsed = None
    else:
        refusal = None if parsed is not None else "--help prints the usage and denies the login"
    if unknown:
        out.append(
            _f(
                "warning",
                "wiring-bad-arguments",
                subject,
                f"nsprov post-login ignores the unknown options {', '.join(unknown)} (and logs "
                "that on every login)",
                "Remove them; nsprov post-login --help lists the options.",
            )
        )
    bad = parsed.bad if parsed is not None else []
    if bad:
        denied = parsed is not None and parsed.on_error == "deny"
        out.append(
            _f(
                "error",
                "wiring-bad-arguments",
                subject,
                f"nsprov post-login ignores a bad value on service {post.name}: "
                + "; ".join(problem for _, problem in bad)
                + (
                    " (with --on-error=deny it denies every login)"
                    if denied
                    else " (it uses the default instead and logs an error on every login)"
                ),
                "Correct the option (one token each, --name=value); nsprov post-login --help "
                "lists the values.",
            )
        )
    if refusal is not None:
        out.append(
            _f(
                "error",
                "wiring-bad-arguments",
                subject,
                f"nsprov post-login refuses its arguments on service {post.name}: {refusal}",
                "Correct the option (one token each, --name=value).",
            )
        )
    return parsed, refusal, out


def _next_program_findings(subject: str, rest: Sequence[str]) -> list[Finding]:
    """The program nsprov execs next: an absolute path (there is no PATH)."""
    out: list[Finding] = []
    for nxt in rest[:1]:
        if not nxt.startswith("/"):
            out.append(
                _f(
                    "error",
                    "wiring-relative-path",
                    subject,
                    f"nsprov execs {nxt!r} after its options without PATH: the login fails",
                    "Give every program of the chain as an absolute path.",
                )
            )
    return out


def _protocol_findings(
    protocol: str, post: ConfSection, subject: str, parsed: Options | None
) -> list[Finding]:
    """``--protocol`` on the line of the service *protocol* logins go through."""
    out: list[Finding] = []
    wired = parsed.protocol if parsed is not None else None
    if wired is None:
        out.append(
            _f(
                "warning",
                "wiring-no-protocol",
                subject,
                f"service {post.name} calls nsprov without --protocol: nsprov runs the default "
                "action list and writes nothing to the client (no alerts, no deny message)",
                f"Append --protocol={protocol} to the executable line.",
            )
        )
    elif wired != protocol:
        out.append(
            _f(
                "error",
                "wiring-protocol-mismatch",
                subject,
                f"{protocol} logins go through service {post.name}, which calls nsprov with "
                f"--protocol={wired}: {protocol} clients get {wired} lines (a POP3 client "
                "desynchronises on an IMAP alert) and the wrong action list",
                f"Give {protocol} a post-login service of its own with --protocol={protocol}.",
            )
        )
    return out


def serve_sockets(conf: DovecotConf) -> list[tuple[str, str]]:
    """``(subject, socket)`` of each post-login service that runs nsprov with ``--serve``."""
    out: list[tuple[str, str]] = []
    for protocol in ("imap", "pop3"):
        service = conf.services.get(protocol) if protocol in conf.protocols else None
        socket = _socket_of(service.get("executable")) if service is not None else None
        post = _post_login_service(conf, socket) if socket is not None else None
        if post is None:
            continue
        tokens = post.get("executable").split(" ")
        for i, word in enumerate(tokens):
            path = word.removeprefix("--serve=") if word.startswith("--serve=") else None
            if word == "--serve" and i + 1 < len(tokens):
                path = tokens[i + 1]
            if path and (f"service {post.name}", path) not in out:
                out.append((f"service {post.name}", path))
    return out


def check_serve_probes(
    conf: DovecotConf, probe: Callable[[str], str | None] | None
) -> list[Finding]:
    """``wiring-serve-down``: a post-login ``--serve=SOCKET`` whose server does not answer.

    *probe* asks the socket for one lookup and says why it failed (None: it
    answered); None skips the check (no probing, e.g. in unit tests).
    """
    if probe is None:
        return []
    out: list[Finding] = []
    for subject, socket in serve_sockets(conf):
        why = probe(socket)
        if why is None:
            continue
        out.append(
            _f(
                "warning",
                "wiring-serve-down",
                subject,
                f"{subject} runs nsprov post-login --serve={socket}, but the server does not "
                f"answer ({why}): every login falls back to computing in-process (slower), "
                "and post-login logs a warning once a minute",
                "Start nsprov serve on that socket (systemctl start nsprov-serve), check "
                f"with 'nsprov serve --status --socket={socket}', or drop --serve from the line.",
            )
        )
    return out
