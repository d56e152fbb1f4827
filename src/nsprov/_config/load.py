"""Loading the configuration file, and the cache of its parsed TOML that spares the parser per login."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .._atomic import write_private
from .._defaults import DEFAULT_CONFIG_PATH
from .._trust import private_dir_fd, read_private
from ..exceptions import ConfigError, UntrustedFileError
from .tables import config_from_mapping

if TYPE_CHECKING:
    from .schema import Config

#: Where ``nsprov post-login`` running as root caches parsed configurations.
DEFAULT_CACHE_DIR = "/run/nsprov"
_CACHE_VERSION = 1


def _read_toml(fd: int, s: os.stat_result, path: str) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - lazy: only when no cached copy is valid

    from .._trust import MAX_FILE_SIZE, read_fd  # noqa: PLC0415 - only when a file is read

    data = read_fd(fd, s, path=path, what="config file", limit=MAX_FILE_SIZE)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _cache_file(cache_dir: str, path: str) -> str:
    from .._names import entry_hash  # noqa: PLC0415 - hashlib only for the cache key

    return f"{cache_dir}/config-{entry_hash(b'config', os.fsencode(os.path.abspath(path)), 12)}"


def _load_raw(path: str, cache_dir: str | None) -> dict[str, Any]:
    """The parsed TOML of *path*, from a cache keyed by the file's identity when possible.

    The file must pass the trust rule (:mod:`nsprov._trust`): a config that
    someone else may write or replace, or a FIFO or device, raises
    :class:`~nsprov.exceptions.UntrustedFileError` before anything is read.
    The key is (device, inode, size, mtime, ctime) of the config file: any
    edit, replacement or chmod invalidates the cached copy.  The cache holds
    the parsed TOML only (``marshal``); validation runs every time.
    """
    import marshal  # noqa: PLC0415 - builtin, cheap

    from .._trust import open_trusted  # noqa: PLC0415 - only when a file is read

    try:
        # Checked and opened component by component from /, never following a link
        # nobody trusted put there; a FIFO or a device is refused before it is opened.
        fd, st = open_trusted(path, what="config file")
    except UntrustedFileError:
        raise
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        key = (_CACHE_VERSION, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cache = os.path.basename(_cache_file(cache_dir, path)) if cache_dir else None
        dir_fd = _cache_dir_fd(cache_dir, create=False) if cache_dir else None
        if cache is not None and dir_fd is not None:
            blob = read_private(dir_fd, cache, limit=1 << 22)
            if blob is not None:
                try:
                    cached_key, data = marshal.loads(blob)  # noqa: S302 - our own file, owner and mode checked
                    if cached_key == key:
                        return data  # type: ignore[no-any-return]
                except (EOFError, ValueError, TypeError):
                    pass
        try:
            data = _read_toml(fd, st, path)
        except UntrustedFileError:
            raise
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
        if dir_fd is not None:
            os.close(dir_fd)
    if cache is not None and cache_dir is not None:
        _store(cache_dir, cache, key, data)
    return data


def _cache_dir_fd(cache_dir: str, *, create: bool) -> int | None:
    """A descriptor of *cache_dir* if it passes the trust rule (made first with *create*), else None."""
    return private_dir_fd(cache_dir, create=create)


def _store(cache_dir: str, name: str, key: tuple[int, ...], data: dict[str, Any]) -> None:
    import marshal  # noqa: PLC0415

    try:
        blob = marshal.dumps((key, data))
    except ValueError:
        return  # TOML dates and times are not marshallable; no cache then
    dir_fd = _cache_dir_fd(cache_dir, create=True)
    if dir_fd is None:
        return
    try:
        write_private(name, blob, dir_fd=dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_config(path: str = DEFAULT_CONFIG_PATH, *, cache_dir: str | None = None) -> Config:
    """Read and validate the TOML file at *path*; every failure is a :class:`ConfigError`.

    With *cache_dir*, the parsed TOML is cached there (see :func:`_load_raw`),
    which spares the TOML parser on every login.
    """
    return config_from_mapping(_load_raw(path, cache_dir), source=path)
