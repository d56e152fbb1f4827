"""The two live Dovecot classes share one base: validation, error lines, clients, life cycle.

No Dovecot runs here: these check the shared plumbing on its own.
"""

from __future__ import annotations

import imaplib
import poplib
import socket
import threading
from pathlib import Path, PurePosixPath

import pytest

from .chroot24 import Dovecot24
from .harness import Dovecot, DovecotInstance, User, error_lines

USER = User(name="nspt-x", uid=0, gid=0, home=Path("/nonexistent"), password="pw", groups=())


def make(kind: type[DovecotInstance], **kwargs: object) -> DovecotInstance:
    if kind is Dovecot24:
        return Dovecot24(PurePosixPath("/srv/t"), [], root=Path("/nonexistent"), **kwargs)  # type: ignore[arg-type]
    return Dovecot(Path("/nonexistent"), [USER], **kwargs)  # type: ignore[arg-type]


KINDS = [Dovecot, Dovecot24]


@pytest.mark.parametrize("kind", KINDS)
def test_shared_base(kind: type[DovecotInstance]) -> None:
    """Both are DovecotInstances, not running before start, with ports unset."""
    d = make(kind)

    assert isinstance(d, DovecotInstance)
    assert (False, 0, 0) == (d.running, d.imap_port, d.pop3_port)
    assert d.log_location().startswith("/nonexistent/")


@pytest.mark.parametrize("kind", KINDS)
def test_postlogin_checked(kind: type[DovecotInstance]) -> None:
    """A post-login program for an unknown protocol, or with a newline, is refused by both."""
    with pytest.raises(ValueError, match="post-login only for"):
        make(kind, postlogin={"smtp": "/bin/true"})
    with pytest.raises(ValueError, match="newline"):
        make(kind, postlogin={"imap": "/bin/true\nservice x {"})


def _refusing_server(
    greeting: bytes, answers: dict[bytes, bytes], *, tagged: bool = False
) -> tuple[int, threading.Thread]:
    """A one-connection loopback server: *greeting*, then the answer to each command's verb.

    ``{tag}`` in an answer is the command's tag (IMAP); a verb not listed closes the connection.
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener, listener.accept()[0] as conn, conn.makefile("rwb") as f:
            f.write(greeting)
            f.flush()
            for line in f:
                words = line.split()
                tag, verb = (words[0], words[1]) if tagged else (b"", words[0])
                if verb.upper() not in answers:
                    return
                f.write(answers[verb.upper()].replace(b"{tag}", tag))
                f.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize("kind", KINDS)
def test_failed_login_notes_the_log(kind: type[DovecotInstance]) -> None:
    """A refused login raises with the instance's label and log location in a note."""
    d = make(kind)
    d.imap_port, imap_thread = _refusing_server(
        b"* OK ready\r\n",
        {
            b"CAPABILITY": b"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n",
            b"LOGIN": b"{tag} NO refused\r\n",
        },
        tagged=True,
    )
    d.pop3_port, pop3_thread = _refusing_server(
        b"+OK ready\r\n", {b"USER": b"+OK\r\n", b"PASS": b"-ERR refused\r\n"}
    )

    with pytest.raises(imaplib.IMAP4.error) as imap:
        d.login_imap("nobody", "pw")
    with pytest.raises(poplib.error_proto) as pop3:
        d.login_pop3("nobody", "pw")

    for raised in (imap, pop3):
        assert [f"{d.label} log ({d.log_location()}):\n"] == raised.value.__notes__
    imap_thread.join(5)
    pop3_thread.join(5)


def test_error_lines() -> None:
    """Only Error, Fatal and Panic lines count."""
    log = "Info: ok\nError: bad\nimap(x): Fatal: worse\nDebug: Errors: none\nPanic: worst\n"

    assert ["Error: bad", "imap(x): Fatal: worse", "Panic: worst"] == error_lines(log)
