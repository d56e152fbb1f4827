"""``nsprov install-launcher``: the direct launcher's text, its refusals, the atomic write."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import nsprov
from nsprov._cli import main
from nsprov._launcher import (
    BASH_FIRST,
    MARK,
    SHEBANG_MAX,
    LauncherError,
    default_package_dir,
    describe,
    install,
    render,
)
from nsprov._pack import pack_path

ROOT = Path(__file__).parent.parent
PACKAGE_DIR = default_package_dir()
BASH = (ROOT / "scripts" / "nsprov").read_text()


@pytest.fixture(name="bindir")
def _bindir(tmp_path: Path) -> Path:
    """A private bin/ holding the wheel's bash launcher as nsprov (mode 0755)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    bindir.chmod(0o755)
    (bindir / "nsprov").write_text(BASH)
    (bindir / "nsprov").chmod(0o755)
    return bindir


class TestRender:
    """The launcher's text: a #! line with -IS, then Python that picks site or not."""

    def test_first_lines(self) -> None:
        """Line 1 is the interpreter as given with -IS (one argument); line 2 marks the launcher."""
        lines = render("/opt/nsprov/bin/python", "/opt/nsprov/lib/python3.11/site-packages")

        first, second = lines.splitlines()[:2]
        assert "#!/opt/nsprov/bin/python -IS" == first
        assert f"{MARK} (nsprov {nsprov.__version__})" == second

    def test_version_unknown_without_metadata(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """In a tree without nsprov's metadata (the Debian build renders from one) it still renders."""
        import importlib.metadata

        def missing(name: str) -> str:
            raise importlib.metadata.PackageNotFoundError(name)

        monkeypatch.setattr(importlib.metadata, "version", missing)

        assert f"{MARK} (nsprov unknown)" == render("/usr/bin/python3", "/x").splitlines()[1]

    def test_renders_from_tree_without_metadata(self, tmp_path: Path) -> None:
        """As debian/rules runs it: the package copied where no dist-info is, Python without site."""
        import shutil
        import subprocess

        shutil.copytree(Path(nsprov.__file__).parent, tmp_path / "nsprov")
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from nsprov._launcher import render; "
            "sys.stdout.write(render('/usr/bin/python3', '/usr/lib/python3/dist-packages'))"
        )

        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-B", "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )

        assert (0, "#!/usr/bin/python3 -IS") == (proc.returncode, proc.stdout.split("\n")[0]), (
            proc.stderr
        )
        assert f"{MARK} (nsprov unknown)" == proc.stdout.split("\n")[1]

    def test_code_names_package_dir(self) -> None:
        """The package directory is a Python literal in the code, which compiles."""
        text = render("/usr/bin/python3", "/usr/lib/python3/dist-packages")

        assert "sys.path.append('/usr/lib/python3/dist-packages')" in text
        compile(text, "nsprov", "exec")

    def test_unicode_path_kept(self) -> None:
        """A printable non-ASCII path is fine (UTF-8 on the #! line, a str literal in the code)."""
        text = render("/opt/nspröv/bin/python", "/opt/nspröv/lib")

        assert text.startswith("#!/opt/nspröv/bin/python -IS\n")
        assert "'/opt/nspröv/lib'" in text

    @pytest.mark.parametrize(
        ("python", "package_dir", "why"),
        [
            ("/opt/ns prov/bin/python", "/opt/x", "whitespace"),
            ("/opt/ns\tprov/bin/python", "/opt/x", "whitespace"),
            ("/opt/nsprov/bin/python", "/opt/x\ny", "whitespace"),
            ("/opt/ns\x1bprov/bin/python", "/opt/x", "non-printable"),
            ("/opt/nsprov/bin/python", "/opt/\x7fx", "non-printable"),
            ("/opt/nsprov/bin/python", "/opt/\udcffx", "UTF-8"),
            ("python3", "/opt/x", "not an absolute path"),
            ("/usr/bin/python3", "lib", "not an absolute path"),
        ],
    )
    def test_refuses_bad_paths(self, python: str, package_dir: str, why: str) -> None:
        """Whitespace, control characters, undecodable bytes and relative paths are refused."""
        with pytest.raises(LauncherError, match=why):
            render(python, package_dir)

    def test_shebang_limit(self) -> None:
        """A #! line of 255 bytes is written; one of 256 is refused (the kernel reads 255 + newline)."""
        fixed = len("#!") + len(" -IS")
        longest = "/" + "p" * (SHEBANG_MAX - fixed - 1)

        assert SHEBANG_MAX == len(render(longest, "/x").splitlines()[0].encode())
        with pytest.raises(LauncherError, match="256 bytes, more than the 255"):
            render(longest + "p", "/x")


class TestInstall:
    """The write: atomic, 0755, idempotent, and refused where it would not be safe."""

    def test_replaces_bash_launcher(self, bindir: Path) -> None:
        """The bash launcher is replaced by the rendered text, mode 0755, no temporary file left."""
        target = bindir / "nsprov"

        assert (str(target), True) == install(
            python=sys.executable, package_dir=PACKAGE_DIR, target=str(target)
        )

        assert render(sys.executable, PACKAGE_DIR) == target.read_text()
        assert 0o755 == target.stat().st_mode & 0o7777
        assert ["nsprov"] == os.listdir(bindir)

    def test_idempotent(self, bindir: Path) -> None:
        """A second run changes nothing (same inode); a changed mode or text is written again."""
        target = bindir / "nsprov"
        install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(target))
        inode = target.stat().st_ino

        assert (str(target), False) == install(
            python=sys.executable, package_dir=PACKAGE_DIR, target=str(target)
        )
        assert inode == target.stat().st_ino
        target.chmod(0o775)
        assert install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(target))[1]
        assert 0o755 == target.stat().st_mode & 0o7777

    def test_default_target_beside_python(self, bindir: Path) -> None:
        """Without --target, the file is nsprov beside the interpreter (a venv's bin/nsprov)."""
        python = bindir / "python"
        python.symlink_to(sys.executable)

        target, _ = install(python=str(python), package_dir=PACKAGE_DIR)

        assert str(bindir / "nsprov") == target
        assert (bindir / "nsprov").read_text().startswith(f"#!{python} -IS\n")

    @pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
    def test_refuses_writable_directory(self, bindir: Path, mode: int) -> None:
        """A target directory group or other may write fails the trust rule: the bash launcher stays."""
        bindir.chmod(mode)

        with pytest.raises(LauncherError, match="writable by group or other"):
            install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(bindir / "nsprov"))

        assert BASH == (bindir / "nsprov").read_text()

    def test_refuses_symlink_target(self, bindir: Path) -> None:
        """A target that is a symbolic link is not replaced by a file: the link's target is named."""
        link = bindir / "link"
        link.symlink_to(bindir / "nsprov")

        with pytest.raises(LauncherError, match="symbolic link"):
            install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(link))

        assert link.is_symlink()
        assert BASH == (bindir / "nsprov").read_text()

    def test_refuses_missing_interpreter(self, bindir: Path) -> None:
        """An interpreter that does not exist would break every login: refused."""
        with pytest.raises(LauncherError, match="not executable"):
            install(python=str(bindir / "python9"), package_dir=PACKAGE_DIR)

        assert BASH == (bindir / "nsprov").read_text()

    def test_refuses_dir_without_nsprov(self, bindir: Path, tmp_path: Path) -> None:
        """A package directory without nsprov in it would break every login: refused."""
        with pytest.raises(LauncherError, match="holds no nsprov package"):
            install(python=sys.executable, package_dir=str(tmp_path), target=str(bindir / "nsprov"))

    def test_new_target(self, bindir: Path) -> None:
        """A target that does not exist yet is created, mode 0755 whatever the umask."""
        target = bindir / "nsprov-direct"
        old = os.umask(0o077)
        try:
            assert (str(target), True) == install(
                python=sys.executable, package_dir=PACKAGE_DIR, target=str(target)
            )
        finally:
            os.umask(old)

        assert 0o755 == target.stat().st_mode & 0o7777

    def test_refuses_missing_directory(self, tmp_path: Path) -> None:
        """A target in a directory that does not exist: one clear error."""
        with pytest.raises(LauncherError, match="No such file or directory"):
            install(
                python=sys.executable,
                package_dir=PACKAGE_DIR,
                target=str(tmp_path / "absent" / "nsprov"),
            )

    def test_refuses_directory_target(self, bindir: Path) -> None:
        """A target that is a directory is not replaced."""
        (bindir / "dir").mkdir()

        with pytest.raises(LauncherError, match="is not a regular file"):
            install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(bindir / "dir"))

    def test_failed_write_leaves_old_file(
        self, bindir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails midway removes its temporary file; the bash launcher stays."""

        def full(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)

        with pytest.raises(OSError, match="No space left"):
            install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(bindir / "nsprov"))

        assert ["nsprov"] == os.listdir(bindir)
        assert BASH == (bindir / "nsprov").read_text()

    def test_unreadable_target_is_rewritten(
        self, bindir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A 0755 target whose text cannot be read back is written again, not taken as current."""
        target = str(bindir / "nsprov")
        install(python=sys.executable, package_dir=PACKAGE_DIR, target=target)

        def unreadable(fd: int, mode: str) -> object:
            os.close(fd)
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdopen", unreadable)

        assert (target, True) == install(
            python=sys.executable, package_dir=PACKAGE_DIR, target=target
        )

    def test_refuses_too_long_shebang(self, bindir: Path) -> None:
        """The refusal of an over-long #! line comes before anything is written."""
        python = "/" + "p" * SHEBANG_MAX

        with pytest.raises(LauncherError, match="more than the 255"):
            install(python=python, package_dir=PACKAGE_DIR, target=str(bindir / "nsprov"))

        assert BASH == (bindir / "nsprov").read_text()


class TestDescribe:
    """``--check``: which launcher a file is."""

    def test_kinds(self, bindir: Path, tmp_path: Path) -> None:
        """The bash launcher, the direct one, another file and a missing one are told apart."""
        target = bindir / "nsprov"
        other = tmp_path / "other"
        other.write_text("#!/usr/bin/python3\nprint()\n")

        bash = describe(str(target))
        install(python=sys.executable, package_dir=PACKAGE_DIR, target=str(target))

        assert BASH_FIRST == BASH.splitlines()[0]
        assert not bash[0]
        assert bash[1].startswith(f"{target} is the bash launcher: each login starts bash first")
        assert "~2 ms, ~115 system calls" in bash[1]
        assert describe(str(target))[0]
        assert (
            False,
            f"{other} is no nsprov launcher (first line '#!/usr/bin/python3')",
        ) == describe(str(other))
        assert not describe(str(tmp_path / "absent"))[0]


class TestCommand:
    """``nsprov install-launcher`` through the command line's dispatcher."""

    def test_write_then_check(self, bindir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--check says 1 before, the write says what it did, --check says 0 after."""
        target = str(bindir / "nsprov")
        args = ["install-launcher", f"--target={target}", f"--python={sys.executable}"]

        assert 1 == main([*args, "--check"])
        assert 0 == main([*args, f"--package-dir={PACKAGE_DIR}"])
        assert 0 == main([*args, f"--package-dir={PACKAGE_DIR}"])
        assert 0 == main([*args, "--check"])

        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f"{target} is the bash launcher: ")
        pack = f"{pack_path(PACKAGE_DIR)}: login pack written"
        assert [
            f"{target}: direct launcher written (#!{sys.executable} -IS)",
            pack,
            f"{target}: already the direct launcher (#!{sys.executable} -IS)",
            pack,
            f"{target} is the direct launcher (#!{sys.executable} -IS)",
        ] == out[1:]

    def test_refusal_is_one_error_line(
        self, bindir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refusal exits 1 with one error line and leaves the bash launcher."""
        bindir.chmod(0o777)

        assert 1 == main(["install-launcher", f"--target={bindir / 'nsprov'}"])

        err = capsys.readouterr().err
        assert 1 == err.count("\n")
        assert err.startswith("nsprov install-launcher: error: ")
        assert "writable by group or other (mode 0777)" in err
        assert BASH == (bindir / "nsprov").read_text()

    def test_listed_in_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """nsprov --help lists the command (the man page and completion read it from there)."""
        with pytest.raises(SystemExit):
            main(["--help"])

        assert "install-launcher" in capsys.readouterr().out
