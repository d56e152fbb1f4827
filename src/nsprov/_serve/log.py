"""The server's log lines: ``ts=… level=… event=… key=value…`` on a stream, one line each."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_BARE = re.compile(r"[A-Za-z0-9_.:/@+,%-]+")

Level = Literal["debug", "info", "warning", "error"]


def _log_value(value: object) -> str:
    """*value* bare when it is a plain token, else a JSON string that is printable as a whole.

    JSON leaves DEL, C1 controls, bidi overrides and lone surrogates (bytes that
    were not UTF-8) unescaped; with any of them the string is ASCII-escaped.
    """
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=not text.isprintable())


class Log:
    """Structured log lines on a stream: ``ts=… level=… event=… key=value…``, one line each."""

    def __init__(
        self,
        level: Level = "info",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.threshold = _LEVELS[level]
        self.stream = stream
        self.clock = clock

    def enabled(self, level: Level) -> bool:
        """Whether lines at *level* are written."""
        return _LEVELS[level] >= self.threshold

    def __call__(self, level: Level, event: str, **fields: object) -> None:
        """Write one line at *level* (values with spaces or quotes are JSON-quoted)."""
        if not self.enabled(level):
            return
        now = self.clock()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        )
        parts = [f"ts={stamp}", f"level={level}", f"event={_log_value(event)}"]
        parts += [f"{k}={_log_value(v)}" for k, v in fields.items() if v is not None]
        line = " ".join(parts) + "\n"
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass
