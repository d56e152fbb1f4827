"""The lean path's thread worker (``nsprov._postlogin.run_thread``): no fork, the same frames."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from nsprov._postlogin import (
    T_DEADLINE,
    T_ENV,
    T_OK,
    T_SCAN,
    Options,
    _run,
    frame,
    main,
    run_thread,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

NEXT = ["/usr/lib/dovecot/script-login"]


def threaded(fn: Callable[[Callable[[bytes], None]], object]) -> Callable[..., object]:
    fn.threaded = True  # type: ignore[attr-defined]
    return fn


def test_frames_reach_the_result() -> None:
    pids: list[int] = []

    def work(send: Callable[[bytes], None]) -> None:
        pids.append(os.getpid())
        send(frame(T_ENV, b"NAMESPACE\0s-a"))
        send(frame(T_OK, b""))

    result = run_thread(work, 2.0)

    assert (True, {"NAMESPACE": "s-a"}, None) == (result.ok, result.env, result.error)
    assert [os.getpid()] == pids  # the same process: nothing forked
    assert not result.detached


def test_an_exception_is_a_failed_worker() -> None:
    def work(send: Callable[[bytes], None]) -> None:
        raise RuntimeError("boom")

    result = run_thread(work, 2.0)

    assert not result.ok
    assert "internal error: RuntimeError: boom" == result.error


def test_no_ok_frame_is_a_failed_worker() -> None:
    result = run_thread(lambda send: None, 2.0)
    assert (False, "worker failed") == (result.ok, result.error)


def test_the_deadline_cuts_and_the_thread_is_left() -> None:
    """A worker stuck past the deadline: the result says so, with the spool it was in."""

    def work(send: Callable[[bytes], None]) -> None:
        send(frame(T_SCAN, b"/nonexistent/marker\0/spool"))
        time.sleep(0.5)

    began = time.monotonic()
    result = run_thread(work, 0.1)
    took = time.monotonic() - began

    assert (True, True, False) == (result.cut, result.detached, result.ok)
    assert result.error is not None
    assert result.error.startswith("deadline of 0.1s passed while scanning spool /spool")
    assert took < 0.4


def test_a_deadline_frame_moves_the_deadline() -> None:
    """The config's deadline (a ``T_DEADLINE`` frame) holds, shorter than the one given."""

    def work(send: Callable[[bytes], None]) -> None:
        send(frame(T_DEADLINE, b"0.1"))
        time.sleep(0.6)

    began = time.monotonic()
    result = run_thread(work, 2.0)

    assert result.cut
    assert time.monotonic() - began < 0.5


def test_a_follow_up_runs_forked_and_the_frames_merge() -> None:
    """The thread hands over to a forked worker (the user's tasks): both count, within one deadline."""
    parent = os.getpid()

    def forked(fd: int) -> None:  # in the child
        os.write(fd, frame(T_ENV, b"B\0" + str(os.getpid() != parent).encode()))
        os.write(fd, frame(T_OK, b""))

    def work(send: Callable[[bytes], None]) -> Callable[[int], None]:
        send(frame(T_ENV, b"A\x001"))
        send(frame(T_ENV, b"B\0thread"))
        return forked

    result = _run(threaded(work), 2.0, time.monotonic())

    assert result.ok
    assert {"A": "1", "B": "True"} == result.env


def test_main_execs_with_the_threads_variables() -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        calls.append((path, list(argv), dict(env)))

    def factory(_opts: Options, _env: Mapping[str, str]) -> Callable[..., object]:
        def work(send: Callable[[bytes], None]) -> None:
            send(frame(T_ENV, b"NAMESPACE\0s-a") + frame(T_OK, b""))

        return threaded(work)

    main(NEXT, environ={"USER": "u"}, execve=execve, worker=factory)

    assert [(NEXT[0], NEXT, {"USER": "u", "NAMESPACE": "s-a"})] == calls
