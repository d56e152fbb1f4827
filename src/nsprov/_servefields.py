"""The fast path: the key a login asks ``nsprov serve`` for, and its answer merged into the login.

Standard library only, without ``json`` (its import costs every login): the post-login parent
parses the server's reply here and merges its fields into the environment as the in-process
path would.
"""

from __future__ import annotations

from . import _os as os  # not the os module: see nsprov._os

TYPE_CHECKING = False  # not typing's: importing typing costs every login ~7 ms
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn


_JSON_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def parse_json_object(data: bytes) -> dict[str, str]:
    """Parse a flat JSON object of strings (what ``nsprov serve`` sends) without ``json``.

    ``json`` would import ``re`` on the login path.  Raises ``ValueError``
    on anything else, which makes the caller fall back.
    """
    text = data.decode("utf-8")
    n = len(text)
    i = _skip_ws(text, 0)
    if i >= n or text[i] != "{":
        raise ValueError("not a JSON object")
    out: dict[str, str] = {}
    i = _skip_ws(text, i + 1)
    if i < n and text[i] == "}":
        return out if _skip_ws(text, i + 1) == n else _raise("trailing data")
    while True:
        key, i = _json_string(text, _skip_ws(text, i))
        i = _skip_ws(text, i)
        if i >= n or text[i] != ":":
            raise ValueError("expected ':'")
        value, i = _json_string(text, _skip_ws(text, i + 1))
        out[key] = value
        i = _skip_ws(text, i)
        if i < n and text[i] == ",":
            i += 1
            continue
        if i < n and text[i] == "}" and _skip_ws(text, i + 1) == n:
            return out
        raise ValueError("expected ',' or '}'")


def _raise(message: str) -> NoReturn:
    raise ValueError(message)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _json_string(text: str, i: int) -> tuple[str, int]:
    if i >= len(text) or text[i] != '"':
        raise ValueError("expected a string")
    out: list[str] = []
    i += 1
    while True:
        j = i
        while j < len(text) and text[j] != '"' and text[j] != "\\":
            j += 1
        if j >= len(text):
            raise ValueError("unterminated string")
        chunk = text[i:j]
        if any(ord(c) < 0x20 for c in chunk):
            raise ValueError("control character in string")
        out.append(chunk)
        if text[j] == '"':
            return "".join(out), j + 1
        esc = text[j + 1 : j + 2]
        if esc == "u":
            code = int(text[j + 2 : j + 6], 16)
            if len(text[j + 2 : j + 6]) != 4:
                raise ValueError("short \\u escape")
            i = j + 6
            if 0xD800 <= code < 0xDC00 and text[i : i + 2] == "\\u":
                low = int(text[i + 2 : i + 6], 16)
                if 0xDC00 <= low < 0xE000:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
            out.append(chr(code))
        elif esc in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[esc])
            i = j + 2
        else:
            raise ValueError(f"bad escape \\{esc}")


def merge_fields(env: Mapping[str, str], fields: Mapping[str, str]) -> dict[str, str]:
    """*env* plus userdb *fields*: keys uppercased, listed once in ``USERDB_KEYS``, name lists extended.

    The same merge :func:`nsprov._env.fit_environ` makes in-process: ``NAMESPACE``
    (``NAMESPACE+``) and the private namespace's ``MAILBOX`` list are extended, not replaced.
    """
    out = dict(env)
    keys = out.get("USERDB_KEYS", "")
    listed = {k.upper() for k in keys.split(" ") if k}
    added: list[str] = []
    for name, given in fields.items():
        key = name.upper()
        value = given
        if _is_list(key) and out.get(key):
            old = out[key].replace(",", " ").replace("\t", " ").split()
            seen = {n.lower() for n in old}
            value = " ".join([*old, *(n for n in given.split() if n.lower() not in seen)])
        out[key] = value
        if key not in listed:
            listed.add(key)
            added.append(key)
    if added:
        if keys and not keys.endswith(" "):
            keys += " "
        out["USERDB_KEYS"] = keys + "".join(k + " " for k in added)
    return out


def _is_list(key: str) -> bool:
    """Whether *key* holds a name list nsprov extends: ``NAMESPACE``, ``NAMESPACE+``,
    ``NAMESPACE/<private>/MAILBOX`` (as :func:`nsprov._env.fit_environ` does)."""
    if key in ("NAMESPACE", "NAMESPACE+"):
        return True
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "NAMESPACE" and parts[2] == "MAILBOX"


# --- the key the post-login step asks for, and asking --------------------------------------


#: The variables the in-process path computes the mail identity from
#: (:func:`nsprov._identity.mail_user_from_environ` reads these and no others).
IDENTITY_VARS = ("USER", "HOME", "UID", "GID", "SYSTEM_GROUPS_USER", "MAIL_ACCESS_GROUPS")
#: The version of the key below; a server that does not know it answers nothing.
SERVE_KEY_VERSION = "1"
#: The reply field that names the configuration the server computed from.
STAMP_FIELD = "nsprov:config"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def config_stamp(path: str) -> str | None:
    """``dev:ino:size:mtime_ns:ctime_ns`` of the file at *path*, None when it cannot be stat'ed.

    Any edit (in place or by rename), replacement or chmod changes it.
    """
    try:
        s = os.stat(path)
    except (OSError, ValueError):
        return None
    return f"{s.st_dev}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}"


def pct(text: str) -> str:
    """*text* as UTF-8 (surrogateescape), every byte but ``A-Za-z0-9-._~/`` as ``%XX``."""
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)


def serve_key(
    protocol: str | None,
    env: Mapping[str, str],
    *,
    config: str,
    stamp: str,
    dovecot: str | None = None,
) -> str:
    """The key ``nsprov serve`` answers for this login (parsed by :func:`nsprov._serve.codec.parse_postlogin_key`).

    ``postlogin?v=1&proto=imap&cfg=<path>&stat=<stamp>[&dovecot=2.3]&USER=…&HOME=…``: the
    configuration the login would read (its path and :func:`config_stamp`), the Dovecot
    version installed beside script-login, and every identity variable the environment holds
    (:data:`IDENTITY_VARS`), values %-escaped.  The server answers only from that very
    configuration and that identity, as the in-process path would compute.
    """
    parts = [
        f"postlogin?v={SERVE_KEY_VERSION}",
        f"proto={protocol or '-'}",
        f"cfg={pct(config)}",
        f"stat={stamp}",
    ]
    if dovecot is not None:
        parts.append(f"dovecot={dovecot}")
    parts += [f"{k}={pct(env[k])}" for k in IDENTITY_VARS if k in env]
    return "&".join(parts)


def ask(path: str, key: str, timeout: float) -> dict[str, str] | None:
    """Ask ``nsprov serve`` at *path* for *key* (a RESP ``GET``); None: no usable answer.

    Uses the ``_socket`` C module directly: ``socket.py`` would import ``enum`` and more
    on every login.  None means "compute in-process": the server has no answer for this
    login (other actions are configured) or answered something unexpected.

    Raises:
        OSError: The server does not answer (refused, no socket, timed out).
    """
    import _socket  # noqa: PLC0415

    raw = key.encode("utf-8", "surrogateescape")
    request = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(raw), raw)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        data = b""
        while True:
            end = data.find(b"\r\n")
            if end >= 0 and data[:1] == b"$":
                size = int(data[1:end])
                if size < 0:
                    return None
                if len(data) >= end + 2 + size + 2:
                    return parse_json_object(data[end + 2 : end + 2 + size])
            elif end >= 0:
                return None  # an error reply or a protocol we do not expect
            chunk = sock.recv(1 << 20)
            if not chunk:
                return None
            data += chunk
    except ValueError:
        return None
    finally:
        sock.close()
