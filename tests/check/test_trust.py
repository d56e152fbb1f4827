"""The trust rule on the files nsprov check reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nsprov._check.trust import check_trusted_files
from nsprov._config import config_from_mapping

if TYPE_CHECKING:
    from pathlib import Path


class TestTrustedFiles:
    """check_trusted_files: every file root uses for others, by the trust rule."""

    def test_directories(self, base: Path, spool: Path) -> None:
        """Cache and socket directories others may write are reported; absent ones are not."""
        for name in ("cache", "run"):
            (base / name).mkdir()
            (base / name).chmod(0o777)
        cfg = base / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        config = config_from_mapping(
            {
                "spool": [{"path": str(spool)}],
                "scan_cache": {"dir": str(base / "cache")},
                "serve": {"socket": str(base / "run" / "s.sock")},
            }
        )

        found = check_trusted_files(str(cfg), config)
        absent = check_trusted_files(str(base / "none.toml"), None)

        assert [str(base / "cache"), str(base / "run")] == [f.subject for f in found]
        assert {"untrusted-file"} == {f.code for f in found}
        assert "scan cache directory not trusted" in found[0].message
        assert "socket directory not trusted" in found[1].message
        assert "chmod go-w" in found[0].fix
        assert [] == absent
