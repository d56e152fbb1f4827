"""Stale per-user directories: index and control directories no spool entry uses any more."""

from __future__ import annotations

import errno
import os
import re
import stat as st
from typing import TYPE_CHECKING, Literal

import attrs

from .._names import HASH_LENGTH, NAMING_SCHEME, SLUG_LENGTH, entry_id
from .._scan import DEFAULT_FS, Fs
from .findings import Finding, _f, _show
from .templates import _PATH_KEYS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .._config import Config, SpoolConfig
    from .._identity import MailUser


_SENTINELS = {"ns": "\0N\0", "id": "\0I\0", "slug": "\0S\0", "hash": "\0H\0"}
_HASH_RE = f"[a-z2-7]{{{HASH_LENGTH}}}"
_SLUG_RE = (
    f"[a-z0-9](?:[a-z0-9-]{{0,{SLUG_LENGTH - 2}}}[a-z0-9])?" if SLUG_LENGTH > 1 else "[a-z0-9]"
)
_STRICT = {"\0I\0": f"(?:{_SLUG_RE}-)?{_HASH_RE}", "\0S\0": f"(?:{_SLUG_RE})?", "\0H\0": _HASH_RE}
_LOOSE = {"\0I\0": "[a-z0-9_-]+", "\0S\0": "[a-z0-9-]*", "\0H\0": "[a-z0-9]+"}


def _pattern(text: str, fields: Mapping[str, str]) -> str:
    parts = re.split("(\0[A-Z]\0)", text)
    return "".join(fields.get(p, re.escape(p)) for p in parts)


@attrs.frozen
class StaleDir:
    """A directory in a per-user parent that no current spool entry would use."""

    user: str
    path: str
    #: ``"current"``: named by this nsprov's scheme; ``"other"``: looks like another scheme's.
    scheme: Literal["current", "other"]


def _parents(config: Config, user: MailUser) -> dict[str, list[tuple[str, SpoolConfig]]]:
    """Per-user parent directories and the namespace-dependent component below each."""
    home = (user.home or "").rstrip("/") or "/"
    out: dict[str, list[tuple[str, SpoolConfig]]] = {}
    for spool in config.spools:
        for key in _PATH_KEYS:
            template = getattr(spool, key)
            if template is None or ("home" in template.fields and not user.home):
                continue
            rendered = os.path.normpath(
                template.render({"home": home, "user": user.user, **_SENTINELS})
            )
            parts = rendered.split("/")
            at = next((i for i, p in enumerate(parts) if "\0" in p), None)
            if at is None:
                continue
            parent = "/".join(parts[:at]) or "/"
            entry = (parts[at], spool)
            if entry not in out.setdefault(parent, []):
                out[parent].append(entry)
    return out


def _render_component(component: str, spool: SpoolConfig, raw: bytes) -> str:
    ident, slug, digest = entry_id(spool.path_bytes, raw)
    ns = spool.name.render({"id": ident, "slug": slug, "hash": digest})
    for key, value in (("ns", ns), ("id", ident), ("slug", slug), ("hash", digest)):
        component = component.replace(_SENTINELS[key], value)
    return component


def find_stale(
    config: Config,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    listings: Mapping[str, Sequence[bytes] | None] | None = None,
    max_remove_fraction: float = 0.5,
    force: bool = False,
    suspects: Mapping[str, str] | None = None,
) -> tuple[list[StaleDir], list[Finding]]:
    """Directories in *user*'s index/control parents that match no spool entry any more.

    The expected names are computed for **every** entry of each spool (the
    user's access does not matter: it may come back).  *listings* maps a spool
    path to its entry names (None: it could not be listed); missing spools are
    listed through *fs*.  A parent shared with an unlistable spool is not checked.
    Unless *force*, neither is a parent whose stale directories belong to an
    empty spool (an unmounted mount point looks like that), to a spool in
    *suspects* (path: why its listing is not trusted, see :func:`changed_spools`),
    or make up more than *max_remove_fraction* of its directories of this naming
    scheme: a ``stale-suspect`` finding instead, and nothing to remove.
    """
    stale: list[StaleDir] = []
    out: list[Finding] = []
    cache: dict[str, Sequence[bytes] | None] = dict(listings or {})

    def listing(spool: SpoolConfig) -> Sequence[bytes] | None:
        if spool.path not in cache:
            try:
                cache[spool.path] = fs.listdir(fs.realpath(spool.path_bytes))
            except OSError:
                cache[spool.path] = None
        return cache[spool.path]

    for parent, components in sorted(_parents(config, user).items()):
        unlisted = [s.path for _, s in components if listing(s) is None]
        if unlisted:
            out.append(
                _f(
                    "info",
                    "stale-unchecked",
                    _show(parent),
                    f"{_show(parent)} (user {user.user}) was not checked for stale directories: "
                    f"spool {unlisted[0]} cannot be listed",
                    "Fix the spool, then run the check again.",
                )
            )
            continue
        parent_b = os.fsencode(parent)
        names, unchecked = _list_parent(parent, parent_b, user, fs)
        if names is None:
            out += unchecked
            continue
        expected = {
            os.fsencode(_render_component(component, spool, raw))
            for component, spool in components
            for raw in listing(spool) or ()
        }
        found, kept = _stale_in(parent_b, names, expected, components, user, fs)
        suspect = (
            None
            if force
            else _suspect(
                parent,
                user,
                components,
                listing,
                found,
                kept,
                max_remove_fraction,
                suspects or {},
            )
        )
        if suspect is not None:
            out.append(suspect)
            found = [d for d in found if d.scheme != "current"]
        stale += found
    for d in stale:
        out.append(stale_finding(d))
    return stale, out


def _list_parent(
    parent: str, parent_b: bytes, user: MailUser, fs: Fs
) -> tuple[list[bytes] | None, list[Finding]]:
    """The names in *parent*, or None and why it is not checked (no finding when absent)."""
    out: list[Finding] = []
    try:
        if not st.S_ISDIR(fs.lstat(parent_b).st_mode) or fs.realpath(parent_b) != parent_b:
            out.append(
                _f(
                    "info",
                    "stale-unchecked",
                    _show(parent),
                    f"{_show(parent)} (user {user.user}) is reached through a symbolic link "
                    "or is no directory: not checked",
                    "Nothing to do unless you expected nsprov's directories there.",
                )
            )
            return None, out
        return fs.listdir(parent_b), out
    except FileNotFoundError:
        return None, out
    except OSError as e:
        out.append(
            _f(
                "info",
                "stale-unchecked",
                _show(parent),
                f"{_show(parent)} (user {user.user}) cannot be listed: {e.strerror or e}",
                "Nothing to do unless you expected nsprov's directories there.",
            )
        )
        return None, out


def _stale_in(
    parent_b: bytes,
    names: Sequence[bytes],
    expected: set[bytes],
    components: Sequence[tuple[str, SpoolConfig]],
    user: MailUser,
    fs: Fs,
) -> tuple[list[StaleDir], int]:
    """The directories among *names* named like nsprov's but not *expected*; how many are."""
    strict = []
    loose = []
    for component, spool in components:
        name_template = spool.name.render({"id": "\0I\0", "slug": "\0S\0", "hash": "\0H\0"})
        strict.append(re.compile(_pattern(component.replace("\0N\0", name_template), _STRICT)))
        loose_name = _pattern(name_template, _LOOSE)
        loose.append(re.compile(_pattern(component, {**_LOOSE, "\0N\0": loose_name})))
    found: list[StaleDir] = []
    kept = 0
    for raw in sorted(names):
        if raw in expected:
            kept += 1
            continue
        text = raw.decode("utf-8", "surrogateescape")
        if any(p.fullmatch(text) for p in strict):
            scheme: Literal["current", "other"] = "current"
        elif any(p.fullmatch(text) for p in loose):
            scheme = "other"
        else:
            continue
        path_b = parent_b.rstrip(b"/") + b"/" + raw
        try:
            if not st.S_ISDIR(fs.lstat(path_b).st_mode):
                continue
        except OSError:
            continue
        found.append(StaleDir(user.user, os.fsdecode(path_b), scheme))
    return found, kept


def _suspect(
    parent: str,
    user: MailUser,
    components: Sequence[tuple[str, SpoolConfig]],
    listing: Callable[[SpoolConfig], Sequence[bytes] | None],
    found: Sequence[StaleDir],
    kept: int,
    max_fraction: float,
    suspects: Mapping[str, str],
) -> Finding | None:
    """The ``stale-suspect`` finding when *parent*'s stale directories look like a lost spool."""
    gone = sum(d.scheme == "current" for d in found)
    if not gone:
        return None
    empty = next((s.path for _, s in components if not listing(s)), None)
    changed = next((s.path for _, s in components if s.path in suspects), None)
    if empty is not None:
        why = f"spool {_show(empty)} is empty (an unmounted file system?)"
    elif changed is not None:
        why = f"spool {_show(changed)} {suspects[changed]}"
    elif gone > max_fraction * (gone + kept):
        why = (
            f"{gone} of {gone + kept} of its directories match no spool entry, more than "
            f"--max-remove-fraction {max_fraction:g}"
        )
    else:
        return None
    where = f"{_show(parent)} (user {user.user})"
    return _f(
        "warning",
        "stale-suspect",
        _show(parent),
        f"{where} was not checked for stale directories: {why}; nothing is removed there",
        "Make sure every spool is mounted and complete. If the mailboxes really are gone, "
        "run nsprov check --clean-stale --force (or raise --max-remove-fraction).",
    )


def stale_finding(d: StaleDir) -> Finding:
    """The finding for one stale directory."""
    path = _show(d.path)
    if d.scheme == "current":
        return _f(
            "info",
            "stale-dir",
            path,
            f"{path} (user {d.user}) matches no entry of any spool any more (the mailbox was "
            "renamed or removed): it holds only that user's index and state of it",
            f"nsprov check --user {d.user} --clean-stale removes it, as the user.",
        )
    return _f(
        "warning",
        "stale-other-scheme",
        path,
        f"{path} (user {d.user}) looks like a namespace directory of another nsprov naming "
        f"scheme (this nsprov uses {NAMING_SCHEME}): left by an older or newer nsprov, whose "
        "index state this one does not use",
        "Once no other nsprov version serves this user, remove it as the user (--clean-stale "
        "leaves it alone).",
    )


def remove_dirs(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """Remove each directory tree without following symbolic links; ``(path, error or None)``.

    Run it as the user (see :func:`clean_stale_as`): a path the user planted
    then leads only where the user could write anyway.
    """
    import shutil  # noqa: PLC0415

    out: list[tuple[str, str | None]] = []
    for path in paths:
        parent, name = os.path.split(path)
        try:
            fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if not st.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory, left alone")
                shutil.rmtree(name, dir_fd=fd)
            finally:
                os.close(fd)
        except OSError as e:
            where = f" ({_show(e.filename)})" if isinstance(e.filename, (str, bytes)) else ""
            out.append((path, f"{e.strerror or e}{where}"))
        else:
            out.append((path, None))
    return out


def clean_stale_as(user: MailUser, paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """:func:`remove_dirs` in a forked process that has become *user* first."""
    import json  # noqa: PLC0415

    from .._engine import drop_privileges  # noqa: PLC0415

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; remove_dirs is tested directly
        status = 1
        try:
            os.close(r)
            drop_privileges(user)
            view = memoryview(json.dumps(remove_dirs(paths)).encode())
            while view:
                view = view[os.write(w, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    try:
        results = json.loads(data) if status == 0 else None
    except ValueError:
        results = None
    if not isinstance(results, list):
        return [(p, f"the clean-up process could not become user {user.user}") for p in paths]
    return [(str(p), None if e is None else str(e)) for p, e in results]


def _removed(user: MailUser, path: str, error: str | None) -> Finding:
    shown = _show(path)
    if error is None:
        return _f(
            "info",
            "stale-removed",
            shown,
            f"removed {shown} as user {user.user}",
            "Nothing to do.",
        )
    return _f(
        "warning",
        "stale-remove-failed",
        shown,
        f"could not remove {shown} as user {user.user}: {error}",
        "Look at what the user cannot delete there (files another user or root created), and "
        "remove it by hand.",
    )
