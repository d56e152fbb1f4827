"""The nsprov under test: one commit's ``src/nsprov`` in a venv of its own, and what it offers."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from tests.live.harness import write_script

from . import REPO
from .settings import DEV_NSPROV

if TYPE_CHECKING:
    from collections.abc import Iterable


@attrs.frozen(kw_only=True)
class Target:
    """The nsprov under test: one commit's ``src/nsprov`` in a throwaway venv of its own.

    Other engineers commit to the work tree while the benchmark runs, and the dev venv's
    editable install would make every login run whatever ``src/`` holds at that moment.  The
    snapshot venv borrows attrs and pathspec from the dev venv's site-packages through a
    ``.pth`` file (a plain path entry, so the editable install's own ``.pth`` is not read).
    """

    commit: str
    src: Path  # the directory holding the snapshot's ``nsprov`` package
    script: Path  # its console script, like the dev venv's
    python: str  # the snapshot venv's interpreter, on the script's ``#!`` line
    launcher: str = "bash"  # what ``script`` is: "direct" (install-launcher), "bash", "console"


def snapshot(rev: str, directory: Path) -> Target:
    """Export ``src/nsprov`` at ``rev`` and give it a venv and a console script."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    directory.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src/nsprov"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python3"
    deps = Path(attrs.__file__).resolve().parent.parent  # the dev venv's site-packages
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pth = venv / "lib" / version / "site-packages" / "nsprov_bench.pth"
    pth.write_text(f"{directory / 'src'}\n{deps}\n")
    script = install_command(commit, venv)
    subprocess.run(
        [str(python), "-I", "-m", "compileall", "-q", str(directory / "src")], check=True
    )
    launcher = install_launcher(commit, script, str(python), directory / "src")
    where = subprocess.run(
        [str(python), "-I", "-c", "import nsprov, attrs, pathspec; print(nsprov.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    if not where.startswith(str(directory)):
        raise RuntimeError(f"the snapshot venv imports nsprov from {where}, not {directory}")
    return Target(
        commit=commit, src=directory / "src", script=script, python=str(python), launcher=launcher
    )


def install_command(commit: str, venv: Path) -> Path:
    """The commit's ``nsprov`` command in ``venv/bin``: its launcher, else a console script.

    Since the launcher (``scripts/nsprov``: bash starting the Python beside it with ``-I``) the
    wheel installs it as ``bin/nsprov``; earlier commits had a pip console script, written here
    from the dev venv's when that is still one.
    """
    launcher = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:scripts/nsprov"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    target = venv / "bin" / "nsprov"
    if launcher.returncode == 0:
        target.write_bytes(launcher.stdout)
        os.chown(target, 0, 0)
        target.chmod(0o755)
        return target
    first, body = DEV_NSPROV.read_text().split("\n", 1)
    if "python" not in first:
        raise RuntimeError(
            f"{commit[:12]} has no scripts/nsprov, and {DEV_NSPROV} is no console script"
        )
    return write_script(target, body, str(venv / "bin" / "python3"))


def install_launcher(commit: str, script: Path, python: str, src: Path) -> str:
    """Make ``script`` the commit's direct launcher when it has ``nsprov install-launcher``.

    As the README's install does (``dev/_bootstrap.sh`` too): ``#!python -IS`` for the
    snapshot venv's interpreter, post-login importing nsprov from the snapshot's ``src``.
    Older commits keep what :func:`install_command` wrote: "bash" or "console".
    """
    has = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}:src/nsprov/_launcher.py"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if has.returncode != 0:
        return "bash" if script.read_bytes().startswith(b"#!/bin/bash") else "console"
    subprocess.run(
        [
            str(script),
            "install-launcher",
            f"--target={script}",
            f"--python={python}",
            f"--package-dir={src}",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return "direct"


def serve_status(target: Target) -> str | None:
    """None when ``nsprov serve --help`` works, else why not."""
    try:
        proc = subprocess.run(
            [str(target.script), "serve", "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nsprov serve --help failed: {e}"
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        return f"`nsprov serve --help` exits {proc.returncode}: {reason[0] if reason else '?'}"
    return None


def scan_cache_problem(target: Target) -> str | None:
    """None when ``nsprov cache --help`` works (the commit has the scan cache), else why not."""
    try:
        proc = subprocess.run(
            [str(target.script), "cache", "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nsprov cache --help failed: {e}"
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        return f"`nsprov cache --help` exits {proc.returncode}: {reason[0] if reason else '?'}"
    return None


def config_cached(config: Path) -> bool:
    """Whether the root post-login worker has cached ``config`` (so the worker ran for it)."""
    from nsprov._config import DEFAULT_CACHE_DIR, _cache_file  # noqa: PLC0415 - the snapshot

    return Path(_cache_file(DEFAULT_CACHE_DIR, str(config))).exists()


def remove_cache_entries(configs: Iterable[Path]) -> None:
    """Drop the entries (config cache, login profile) root's post-login kept for this run's configs."""
    from nsprov._config import DEFAULT_CACHE_DIR, _cache_file  # noqa: PLC0415

    for config in configs:
        with contextlib.suppress(FileNotFoundError):
            Path(_cache_file(DEFAULT_CACHE_DIR, str(config))).unlink()
    try:
        from nsprov._profile import file_name  # noqa: PLC0415 - the snapshot's, if it has one
    except ImportError:
        return
    for config in configs:
        with contextlib.suppress(FileNotFoundError):
            (Path(DEFAULT_CACHE_DIR) / file_name(str(config))).unlink()
