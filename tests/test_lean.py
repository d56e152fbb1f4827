"""The lean login path: the same fields as the full path, from a compiled profile, stdlib only.

The equivalence property builds real spools in a temporary directory (random
names, kinds, modes, owners and POSIX ACLs), random users and random
namespaces-only configurations, and requires :func:`nsprov._lean.compute` to
give exactly the variables and warnings of the full in-process path
(:func:`nsprov.plan` on the user the full worker computes), in both dialects;
or, where the full path fails, to fail too.
"""

from __future__ import annotations

import ast
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from nsprov import _plainscan
from nsprov._access import ACL_XATTR
from nsprov._breaker import SpoolBreaker
from nsprov._config import config_from_mapping, load_config
from nsprov._engine import plan
from nsprov._fs import Fs
from nsprov._identity import mail_user_from_environ
from nsprov._lean import PROFILE_SCHEMA, FullPathNeeded, LeanError, _matcher, compute, run_login
from nsprov._perms import PosixAcl
from nsprov._plainscan import anchored_facts
from nsprov._postlogin import T_DEADLINE, T_ENV, T_LOGIN, T_POLICY, T_SCAN, Options, log
from nsprov._profile_compile import compile_patterns, compile_profile, path_spec, why_full
from nsprov._render import env_escape
from nsprov._scan import _Matcher
from nsprov._worker import run as worker_run
from nsprov._worker import version_signs
from nsprov.exceptions import NsprovError, SpoolError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown spool entries")
#: Owners of spool entries, and the ids users and ACL entries draw from.
IDS = (70001, 70002, 70003)
NAMES = (
    b"a",
    b"b",
    b"Sales Team",
    b"x:INDEX=evil",
    b".hidden",
    b"caf\xc3\xa9",
    b"\xff\xfe",
    b"dot.sep",
    b"ctl\x01",
    b"INBOX",
)
KINDS = (
    "link-deep",
    "dangling-in",
    "maildir",
    "maildir",
    "maildir",
    "no-new",
    "cur-file",
    "file",
    "link-in",
    "link-out",
    "dangling",
)
MODES = (0o755, 0o755, 0o755, 0o755, 0o755, 0o750, 0o705, 0o700, 0o711, 0o000)


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nsprov-lean-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


acls = (
    st.none()
    | st.none()
    | st.builds(
        lambda users, groups, obj, other, mask: PosixAcl(
            user_obj=obj, group_obj=obj & 5, other=other, mask=mask, users=users, groups=groups
        ),
        st.dictionaries(st.sampled_from(IDS), st.integers(0, 7), max_size=2).map(dict.items),
        st.dictionaries(st.sampled_from(IDS), st.integers(0, 7), max_size=2).map(dict.items),
        st.integers(0, 7),
        st.integers(0, 7),
        st.integers(0, 7),
    )
)
entries = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(KINDS),
        st.sampled_from(MODES),
        st.sampled_from(MODES),
        st.sampled_from(IDS),
        acls,
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda e: e[0],
)


def _make(path: Path, mode: int, owner: int, acl: PosixAcl | None) -> None:
    os.chown(path, owner, owner)
    path.chmod(mode)
    if acl is not None:
        os.setxattr(path, ACL_XATTR, acl.to_xattr())


def build_spool(base: Path, spec: list[tuple[Any, ...]], spool_mode: int) -> Path:
    """A spool under *base* with one entry per *spec* row (name, kind, mode, sub mode, owner, ACL)."""
    spool = base / "spool"
    spool.mkdir()
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    for sub in ("cur", "new"):
        (outside / sub).mkdir(exist_ok=True)
    for raw, kind, mode, sub_mode, owner, acl in spec:
        path = Path(os.fsdecode(os.fsencode(spool) + b"/" + raw))
        if kind in {"maildir", "no-new", "cur-file"}:
            path.mkdir()
            (path / "cur").mkdir()
            if kind == "maildir":
                (path / "new").mkdir()
            if kind == "cur-file":
                (path / "new").write_text("")
            for sub in ("cur", "new"):
                if (path / sub).is_dir():
                    _make(path / sub, sub_mode, owner, None)
            _make(path, mode, owner, acl)
        elif kind == "file":
            path.write_text("From someone\n")
        elif kind == "link-in":
            target = spool / ".target"
            if not target.exists():
                for sub in ("cur", "new"):
                    (target / sub).mkdir(parents=True)
            path.symlink_to(target)
        elif kind == "link-deep":  # into a directory of the spool the user may not search
            private = spool / ".private"
            if not private.exists():
                for sub in ("cur", "new"):
                    (private / "inner" / sub).mkdir(parents=True)
                private.chmod(0o700)
            path.symlink_to(private / "inner")
        elif kind == "dangling-in":
            path.symlink_to(spool / ".gone")
        elif kind == "link-out":
            path.symlink_to(outside)
        else:
            path.symlink_to(base / "nowhere")
    spool.chmod(spool_mode)
    return spool


configs = st.fixed_dictionaries(
    {
        "version": st.sampled_from(("2.3", "2.4")),
        "symlinks": st.sampled_from(("skip", "inside")),
        "list": st.sampled_from(("yes", "children", "no")),
        "hidden": st.booleans(),
        "subscriptions": st.booleans(),
        "max": st.sampled_from((1, 2, 6, 6, 6)),
        "separator": st.sampled_from(("/", ".")),
        "name": st.sampled_from(("s-{id}", "x-{hash}")),
        "prefix": st.sampled_from(("Shared{sep}{name}{sep}", "P{sep}{name}{sep}")),
        "index": st.sampled_from(("{home}/.nsprov/{ns}", "/var/idx/{user}/{id}")),
        "control": st.sampled_from((None, "same", "{home}/ctl/{hash}")),
        "subscribe": st.booleans(),
        "driver": st.sampled_from((None, "maildir", "sdbox")),
        "reserved": st.sampled_from(((), ("s-sal-xxxxxxxx",))),
        "taken": st.sampled_from(((), ("Shared/a/", "P.b."))),
        "exclude": st.sampled_from(((), (), ("a*",), ("*", "!b", "!S*"), ("[!a]*",))),
        "include": st.sampled_from(((), (), ("*a*",), ("b", "caf*", "x*"))),
        "ignore": st.sampled_from((None, None, "a*\n", "*\n!b\n", "# only\n")),
    }
)
users = st.fixed_dictionaries(
    {
        "uid": st.sampled_from((*IDS, 70004)),
        "gid": st.sampled_from(IDS),
        "access": st.lists(st.sampled_from(IDS), max_size=2),
        "home": st.sampled_from(("/home/u", "/home/u/", None, "rel")),
        "keys": st.sampled_from(("", "HOME UID ", "HOME NAMESPACE")),
        "namespace": st.sampled_from((None, "inbox", "inbox,s-x")),
        "signs": st.booleans(),
    }
)


def make_config(spool: Path, c: Mapping[str, Any]) -> Any:
    table: dict[str, Any] = {
        "path": str(spool),
        "symlinks": c["symlinks"],
        "list": c["list"] if c["list"] != "yes" or not c["subscribe"] else "children",
        "hidden": c["hidden"],
        "subscriptions": c["subscriptions"],
        "separator": c["separator"],
        "name": c["name"],
        "prefix": c["prefix"],
        "index": c["index"],
        "exclude": list(c["exclude"]),
        "include": list(c["include"]),
    }
    if c["control"] == "same":
        table["control"] = c["index"]
    elif c["control"] is not None:
        table["control"] = c["control"]
    if c["subscribe"] and c["version"] == "2.3" and table["list"] == "children":
        table["subscribe"] = True
    dovecot: dict[str, Any] = {
        "version": c["version"],
        "reserved_names": list(c["reserved"]),
        "config_prefixes": list(c["taken"]),
    }
    if c["driver"] is not None:
        dovecot["global_mail_driver"] = c["driver"]
    return config_from_mapping(
        {"spool": [table], "namespace": {"max": c["max"]}, "dovecot": dovecot}
    )


def make_environ(u: Mapping[str, Any]) -> dict[str, str]:
    env = {"USER": "lean-user", "UID": str(u["uid"]), "GID": str(u["gid"])}
    env["MAIL_ACCESS_GROUPS"] = ",".join(map(str, u["access"]))
    if u["home"] is not None:
        env["HOME"] = u["home"]
    if u["keys"]:
        env["USERDB_KEYS"] = u["keys"]
    if u["namespace"] is not None:
        env["NAMESPACE"] = u["namespace"]
    if u["signs"]:
        env["MAIL"] = "maildir:~/Maildir"
        env["MAIL_PATH"] = "~/Maildir"
    return env


def full_path(config: Any, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What the full worker sends and logs for the namespaces action (no directories made)."""
    user = mail_user_from_environ(environ, config.identity)
    p = plan(config, user, environ, keep_skipped=False)
    changes = {k: v for k, v in p.environ.items() if environ.get(k) != v}
    sign = version_signs(environ, config.dialect)
    return changes, [*([sign] if sign else []), *p.warnings]


@ROOT_ONLY
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=entries,
    config=configs,
    user=users,
    spool_mode=st.sampled_from((0o755, 0o755, 0o755, 0o750)),
)
def test_lean_equals_full_path(
    base: Path,
    spec: list[tuple[Any, ...]],
    config: dict[str, Any],
    user: dict[str, Any],
    spool_mode: int,
) -> None:
    """Random spools, users and configs: the lean path's fields and warnings are the full path's."""
    for child in base.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    spool = build_spool(base, spec, spool_mode)
    if config["ignore"] is not None:
        (spool / ".nsprovignore").write_text(config["ignore"])
    try:
        cfg = make_config(spool, config)
    except NsprovError:
        return  # a combination the config refuses (e.g. subscribe on 2.4)
    environ = make_environ(user)
    profile = compile_profile(cfg)
    assert profile is not None
    profile = marshal.loads(marshal.dumps(profile))  # noqa: S302 - our own bytes
    try:
        expected = full_path(cfg, environ)
    except NsprovError as e:
        event(f"full path fails: {type(e).__name__}")
        with pytest.raises(NsprovError):
            compute(profile, environ, user_tasks=False)
        return
    event(f"namespaces: {sum(k.endswith('/PREFIX') for k in expected[0])}")
    event(f"warnings: {len(expected[1])}")
    assert expected == compute(profile, environ, user_tasks=False)


def _one_spool(base: Path, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    spool = base / "spool"
    for name in names:
        for sub in ("cur", "new"):
            (spool / name / sub).mkdir(parents=True, mode=0o755)
            (spool / name / sub).chmod(0o755)
        (spool / name).chmod(0o755)
    spool.chmod(0o755)
    return spool


def test_profile_is_plain_data(base: Path) -> None:
    """The profile survives marshal and carries its schema."""
    cfg = config_from_mapping({"spool": [{"path": str(_one_spool(base))}]})
    profile = compile_profile(cfg)

    assert profile is not None
    assert PROFILE_SCHEMA == profile["schema"]
    assert profile == marshal.loads(marshal.dumps(profile))  # noqa: S302 - our own bytes


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"scan_cache": {}}, "[scan_cache]"),
        ({"mail": {"location": "maildir:{home}/Mail"}}, "actions for imap"),
        ({"last_login": {"backend": "sqlite"}}, "[last_login] backend = sqlite"),
        ({"field": [{"name": "home", "value": "/x"}]}, "[[field]] home: changes the mail identity"),
    ],
)
def test_full_path_configs(base: Path, extra: dict[str, Any], why: str) -> None:
    """[mail], an SQL last-login, a field changing the identity and a scan cache: no profile."""
    spool = _one_spool(base)
    try:
        cfg = config_from_mapping({"spool": [{"path": str(spool)}], **extra})
    except NsprovError as e:  # the action's own table is required
        pytest.skip(str(e))
    assert compile_profile(cfg) is None
    assert why in (why_full(cfg) or "")


def test_patterns_compile_to_pathspecs_regexes(base: Path) -> None:
    """Include/exclude patterns are compiled: the profile carries pathspec's regular expressions."""
    spool = _one_spool(base)
    cfg = config_from_mapping({"spool": [{"path": str(spool), "exclude": ["a*", "# c", "!ab"]}]})
    profile = compile_profile(cfg)

    assert profile is not None
    assert [True, False] == [inc for _, _, inc in profile["spools"][0]["exclude"]]
    assert profile["spools"][0]["include"] is None


PATTERN_TEXT = st.text(alphabet="ab*?[]!/\\#. -", max_size=6)


@settings(max_examples=500, deadline=None)
@given(
    exclude=st.lists(PATTERN_TEXT, max_size=4),
    include=st.lists(PATTERN_TEXT, max_size=3),
    # The scan tests dot entries before patterns: a name reaching a matcher never starts with ".".
    names=st.lists(
        st.text(alphabet="ab.- *?[]!\\#", min_size=1, max_size=5).filter(
            lambda n: not n.startswith(".")
        ),
        max_size=8,
    ),
)
def test_compiled_patterns_match_as_pathspec(
    exclude: list[str], include: list[str], names: list[str]
) -> None:
    """The lean matcher excludes exactly the names pathspec's matcher of the full path does."""
    try:
        full = _Matcher(
            path_spec(exclude) if exclude else None, path_spec(include) if include else None
        )
        ex = compile_patterns(tuple(exclude)) if exclude else ()
        inc = compile_patterns(tuple(include)) if include else None
    except Exception:
        assume(False)
        return
    assert ex is not None
    lean = _matcher(ex, inc)
    for name in names:
        expected = full.excluded(name + "/") is not None
        assert expected == (lean is not None and lean(name + "/")), name


def test_debug_user_and_other_schema_need_the_full_path(base: Path) -> None:
    """A debug user, or a profile of another schema, sends that login to the full path."""
    spool = _one_spool(base)
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    cfg = config_from_mapping(
        {"spool": [{"path": str(spool)}], "postlogin": {"debug_users": ["u"]}}
    )
    profile = compile_profile(cfg)
    assert profile is not None
    with pytest.raises(FullPathNeeded, match="debug_users"):
        compute(profile, env, user_tasks=False)
    with pytest.raises(FullPathNeeded, match="schema"):
        compute({**profile, "schema": PROFILE_SCHEMA + 1}, env, user_tasks=False)


@ROOT_ONLY
@pytest.mark.parametrize(
    ("text", "file_mode", "spool_mode", "warned"),
    [
        ("a\n", 0o644, 0o755, False),
        ("*\n!b\n", 0o644, 0o755, False),
        ("# nothing\n", 0o644, 0o755, False),
        ("", 0o644, 0o755, False),
        ("a\n", 0o666, 0o755, True),  # writable by others: not used
        ("a\n", 0o644, 0o777, True),  # in a spool anybody may write: not used
        ("".join(f"p{i}\n" for i in range(1001)), 0o644, 0o755, True),  # too many patterns
    ],
)
def test_ignore_file_as_the_full_path_reads_it(
    base: Path, text: str, file_mode: int, spool_mode: int, warned: bool
) -> None:
    """The ignore file is read at login under the trust rule: the same fields and warnings."""
    spool = _one_spool(base)
    ignore = spool / ".nsprovignore"
    ignore.write_text(text)
    ignore.chmod(file_mode)
    spool.chmod(spool_mode)
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
    profile = compile_profile(cfg)
    assert profile is not None
    expected = full_path(cfg, env)

    assert expected == compute(profile, env, user_tasks=False)
    assert warned == any("ignore file not used" in w for w in expected[1])


def test_edited_ignore_file_needs_the_full_path(base: Path) -> None:
    """An ignore file edited after the profile was built is not matched with stale patterns."""
    spool = _one_spool(base)
    (spool / ".nsprovignore").write_text("a\n")
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
    profile = compile_profile(cfg)
    assert profile is not None
    got, _ = compute(profile, env, user_tasks=False)
    assert "a" not in {v.split("/")[1] for k, v in got.items() if k.endswith("/PREFIX")}
    (spool / ".nsprovignore").write_text("b\n")

    with pytest.raises(FullPathNeeded, match="ignore file"):
        compute(profile, env, user_tasks=False)
    (spool / ".nsprovignore").unlink()
    got, _ = compute(profile, env, user_tasks=False)
    assert 3 == sum(k.endswith("/PREFIX") for k in got)


def test_caps_are_the_full_paths() -> None:
    """The lean path's ignore-file caps are the full path's."""
    from nsprov import _fs, _lean, _scan

    assert (_fs.IGNORE_MAX_BYTES, _scan.IGNORE_MAX_PATTERNS) == (
        _lean.IGNORE_MAX_BYTES,
        _lean.IGNORE_MAX_PATTERNS,
    )


def test_protocol_without_actions_and_installed_mismatch(base: Path) -> None:
    """POP3 with nothing configured adds nothing; another installed Dovecot exports nothing."""
    spool = _one_spool(base)
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    cfg = config_from_mapping(
        {"spool": [{"path": str(spool)}], "actions": {"imap": ["namespaces"], "pop3": []}}
    )
    profile = compile_profile(cfg)
    assert profile is not None

    assert ({}, []) == compute(profile, env, protocol="pop3", user_tasks=False)
    assert "NAMESPACE" in compute(profile, env, user_tasks=False)[0]  # the caller checked
    got, warnings = compute(profile, env, protocol="imap", installed="2.4", user_tasks=False)
    assert {} == got
    assert ["Dovecot 2.4 is installed"] == [w[:24] for w in warnings]
    got, _ = compute(profile, env, protocol="imap", user_tasks=False)
    assert "NAMESPACE" in got


@ROOT_ONLY
def test_same_as_show_format_env(base: Path) -> None:
    """``nsprov show --format=env`` prints exactly the lean path's variables, both dialects."""
    spool = _one_spool(base, ("a", "b", "Sales Team", "x:y"))
    (spool / "b").chmod(0o700)
    for version in ("2.3", "2.4"):
        conf = base / f"nsprov-{version}.toml"
        conf.write_text(f'[dovecot]\nversion = "{version}"\n[[spool]]\npath = "{spool}"\n')
        cfg = config_from_mapping(
            {"spool": [{"path": str(spool)}], "dovecot": {"version": version}}
        )
        profile = compile_profile(cfg)
        assert profile is not None
        env = {
            "USER": "nsprov-lean-nouser",
            "UID": "70001",
            "GID": "70002",
            "HOME": "/home/x",
            "MAIL_ACCESS_GROUPS": "70003",
            "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER ",
        }
        got, _ = compute(profile, env, user_tasks=False)
        shown = subprocess.run(
            [
                *(sys.executable, "-m", "nsprov", "show", "--user", env["USER"]),
                *("--uid", "70001", "--gid", "70002", "--groups", "70003", "--home", "/home/x"),
                *("--config", str(conf), "--format", "env"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert len(got) > 3
        assert shown == "".join(f"{k}={env_escape(v)}\n" for k, v in sorted(got.items()))


@ROOT_ONLY
def test_directories_created_as_the_user(base: Path) -> None:
    """In a throwaway child as root: the index directories are made as the mail user, 0700."""
    spool = _one_spool(base, ("a",))
    home = base / "home"
    home.mkdir()
    os.chown(home, 70001, 70001)
    cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
    profile = compile_profile(cfg)
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": str(home)}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _, warnings = compute(profile, env)  # type: ignore[arg-type]
            os._exit(0 if not warnings and os.getuid() == 70001 else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert 0 == os.waitstatus_to_exitcode(status)
    (made,) = (home / ".nsprov").iterdir()
    s = made.stat()
    assert (70001, 70001, 0o700) == (s.st_uid, s.st_gid, s.st_mode & 0o777)


#: What the lean path may import on a warm profile: built-in and os-level modules, and its own.
ALLOWED = {
    "__future__",
    "_blake2",
    "_stat",
    "stat",
    "errno",
    "grp",
    "itertools",
    "marshal",
    "pwd",
    "nsprov",
    "nsprov._defaults",
    "nsprov._access",
    "nsprov._actrules",
    "nsprov._atomic",
    "nsprov._fields",
    "nsprov._lean",
    "nsprov._names",
    "nsprov._os",
    "nsprov._plainscan",
    "nsprov._postlogin",
    "nsprov._servefields",
    "nsprov._trust",
    "nsprov._userdb",
    "nsprov.exceptions",
}


def test_imported_modules(base: Path, tmp_path: Path) -> None:
    """A fresh ``python -I -S`` loading a profile and computing a login imports only the allowed set (no os)."""
    spool = _one_spool(base)
    cfg = config_from_mapping({"spool": [{"path": str(spool)}], "identity": {"mail_gid": "root"}})
    blob = tmp_path / "profile"
    blob.write_bytes(marshal.dumps(compile_profile(cfg)))
    where = str(Path(compute.__code__.co_filename).parent.parent)
    code = (
        "import sys\n"
        f"sys.path.append({where!r})\n"
        "before = set(sys.modules)\n"
        "import marshal, nsprov._lean\n"
        f"profile = marshal.loads(open({str(blob)!r}, 'rb').read())\n"
        "env = {'USER': 'u', 'UID': 'nobody', 'HOME': '/home/u', 'MAIL_ACCESS_GROUPS': 'daemon'}\n"
        "got, _ = nsprov._lean.compute(profile, env, user_tasks=False)\n"
        "assert 'NAMESPACE' in got, got\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    imported = set(ast.literal_eval(out))

    assert set() == imported - ALLOWED
    assert not imported & {"attrs", "typing", "re", "pathspec", "tomllib", "hashlib", "os"}


EVERY_ACTION = """
[deny]
users = ["blocked-*"]
networks = ["192.0.2.0/24", "2001:db8::/32"]
local_networks = ["198.51.100.0/24"]
groups = ["nogroup-*"]
allow_users = ["admin?"]
[[alert]]
text = "Hello {user}"
[[alert]]
text = "Flagged"
if_exists = "{home}/flag"
[acl_groups]
exclude = ["root"]
[last_login]
path = "{home}/.nsprov/last-login"
[[field]]
name = "quota_rule"
value = "*:storage=1G"
"""


def test_imported_modules_every_action(base: Path, tmp_path: Path) -> None:
    """Every action the lean path runs, user tasks included, imports only the allowed set:
    no fnmatch, ipaddress, re, attrs, typing, pathspec, tomllib or os."""
    spool = _one_spool(base)
    conf = base / "nsprov.toml"
    conf.write_text(f'[[spool]]\npath = "{spool}"\n[identity]\nmail_gid = "root"\n{EVERY_ACTION}')
    profile = compile_profile(load_config(str(conf)))
    assert profile is not None
    home = base / "home"
    (home / ".nsprov").mkdir(parents=True)
    (home / "flag").touch()
    if os.geteuid() == 0:  # the tasks run as uid 70001
        for d in (home, home / ".nsprov"):
            os.chown(d, 70001, 70001)
    blob = tmp_path / "profile"
    blob.write_bytes(marshal.dumps(profile))
    where = str(Path(compute.__code__.co_filename).parent.parent)
    env = {
        "USER": "u",
        "UID": "70001",
        "HOME": str(home),
        "IP": "203.0.113.1",
        "LOCAL_IP": "::ffff:10.0.0.1",
        "MAIL_ACCESS_GROUPS": "daemon",
        "USERDB_KEYS": "HOME ",
    }
    code = (
        "import sys\n"
        f"sys.path.append({where!r})\n"
        "before = set(sys.modules)\n"
        "import marshal, nsprov._lean\n"
        f"profile = marshal.loads(open({str(blob)!r}, 'rb').read())\n"
        f"out = nsprov._lean.run_login(profile, {env!r}, protocol='imap')\n"
        "assert 'NAMESPACE' in out.changes and 'QUOTA_RULE' in out.changes, out.changes\n"
        "assert 'ACL_GROUPS' in out.changes and not out.denied, out.changes\n"
        "assert [b'* OK [ALERT] Hello u\\r\\n', b'* OK [ALERT] Flagged\\r\\n'] == out.client\n"
        "assert not out.errors, out.errors\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=False
    )
    assert 0 == out.returncode, out.stderr
    imported = set(ast.literal_eval(out.stdout))

    assert (home / ".nsprov" / "last-login").read_text().endswith(" imap 203.0.113.1\n")
    assert set() == imported - ALLOWED
    forbidden = {"attrs", "typing", "re", "pathspec", "tomllib", "os", "fnmatch", "ipaddress"}
    assert not imported & forbidden


@ROOT_ONLY
@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_same_as_serves_reply(base: Path, version: str) -> None:
    """``nsprov serve``'s post-login reply, merged as the parent merges it, carries the lean fields."""
    import json

    from nsprov._config import load_config
    from nsprov._postlogin import STAMP_FIELD, merge_fields, serve_key
    from nsprov._serve.codec import parse_postlogin_key
    from nsprov._serve.resolver import Resolver, load_stamped

    spool = _one_spool(base, ("a", "b", "Sales Team", "x:y"))
    (spool / "b").chmod(0o700)
    conf = base / "nsprov.toml"
    conf.write_text(f'[dovecot]\nversion = "{version}"\n[[spool]]\npath = "{spool}"\n')
    config, stamp = load_stamped(load_config, str(conf))
    assert stamp is not None
    env = {
        "USER": "u",
        "UID": "70001",
        "GID": "70002",
        "HOME": "/home/x",
        "USERDB_KEYS": "UID GID HOME ",
    }
    key = parse_postlogin_key(serve_key("imap", env, config=str(conf), stamp=stamp))
    assert key is not None
    out = Resolver().compute(config, 0, key, 0.0, stamp)
    assert "found" == out.answer.kind, out.answer.error
    fields = json.loads(out.answer.value)
    del fields[STAMP_FIELD]
    served = {k: v for k, v in merge_fields(env, fields).items() if env.get(k) != v}
    profile = compile_profile(config)
    assert profile is not None
    got, _ = compute(profile, env, protocol="imap", user_tasks=False)

    def keys(d: dict[str, str]) -> set[str]:
        return set(d.pop("USERDB_KEYS").split())

    assert len(got) > 3
    assert keys(served) == keys(got)  # the same keys listed (serve lists them in its order)
    assert served == got


def _in_child(work: Callable[[int], None]) -> tuple[bytes, bytes]:
    """Run *work(fd)* in a forked child with stderr captured: (what it wrote on fd, stderr)."""
    r, w = os.pipe()
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.close(r)
                os.dup2(err.fileno(), 2)
                work(w)
            except BaseException:
                code = 3
            os._exit(code)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        err.seek(0)
        return b"".join(chunks), err.read()


def _env_frames(data: bytes) -> dict[str, str]:
    out = {}
    while data:
        tag, size = data[:1], int.from_bytes(data[1:5], "big")
        payload, data = data[5 : 5 + size], data[5 + size :]
        if tag == T_ENV:
            key, _, value = payload.partition(b"\0")
            out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return out


@ROOT_ONLY
@pytest.mark.parametrize(
    ("names", "extra", "env_extra", "home_uid"),
    [
        (("a", "b", "c"), "", {}, 70001),
        (("a", "b", "c", "d"), "[namespace]\nmax = 2\n", {"MAIL": "maildir:~/Maildir"}, 70001),
        (("a", "b"), '[dovecot]\nversion = "2.4"\n', {"NAMESPACE+": "inbox"}, 70001),
        (("a", "b"), "", {}, 0),  # a home the user may not write: the directories fail
    ],
)
def test_same_as_the_forked_worker(
    base: Path, names: tuple[str, ...], extra: str, env_extra: dict[str, str], home_uid: int
) -> None:
    """The full worker, forked as a login forks it: the same T_ENV frames, the same log line,
    the same index directories made as the user (with the spool breaker both times)."""
    spool = _one_spool(base, names)
    home = base / "home"
    home.mkdir()
    os.chown(home, home_uid, home_uid)
    conf = base / "nsprov.toml"
    conf.write_text(f'{extra}[[spool]]\npath = "{spool}"\n')
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": str(home), **env_extra}
    opts = Options()
    opts.config, opts.protocol = str(conf), "imap"
    state = base / "state"

    frames, full_err = _in_child(lambda fd: worker_run(fd, opts, env, state_dir=str(state)))
    made = home / ".nsprov"
    full_dirs = sorted(p.name for p in made.iterdir()) if made.exists() else []
    shutil.rmtree(made, ignore_errors=True)
    profile = compile_profile(load_config(str(conf)))
    assert profile is not None

    def lean(fd: int) -> None:
        breaker = SpoolBreaker(str(state), lambda _data: None)
        got, lines = compute(profile, env, protocol="imap", breaker=breaker)
        if lines:
            log("user u: " + "; ".join(lines))
        os.write(fd, marshal.dumps(got))

    out, lean_err = _in_child(lean)

    assert _env_frames(frames) == marshal.loads(out)  # noqa: S302 - our own bytes
    assert full_err == lean_err
    assert (b"namespace.max=2" in full_err) == ("max" in extra)
    assert full_dirs == (sorted(p.name for p in made.iterdir()) if made.exists() else [])
    assert len(full_dirs) == (min(len(names), 2 if "max" in extra else 9) if home_uid else 0)
    assert (b"cannot create" in full_err) == (not home_uid)


@pytest.mark.parametrize("anchored", ["none", "custom"])
def test_injected_filesystem(base: Path, anchored: str) -> None:
    """An injected Fs is used as the full path uses it: path-based checks without a walk."""
    spool = _one_spool(base, ("a", "b", "c"))
    (spool / "c" / "new").rmdir()

    def walk(real: bytes, parts: Sequence[bytes]) -> list[Any]:
        return anchored_facts(real, parts)  # another callable than the default: called as given

    fs = Fs(anchored=None) if anchored == "none" else Fs(anchored=walk)
    cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    p = plan(cfg, mail_user_from_environ(env, cfg.identity), env, fs=fs, keep_skipped=False)
    profile = compile_profile(cfg)
    assert profile is not None

    assert (p.environ, list(p.warnings)) == compute(profile, env, fs=fs, user_tasks=False)
    assert 2 == sum(k.endswith("/PREFIX") for k in p.environ)


class _Breaker:
    """A breaker that refuses one spool and fails for another (what SpoolBreaker may do)."""

    def __init__(self, refuse: str, fail: str) -> None:
        self.refuse, self.fail = refuse, fail
        self.closed = False
        self.left: list[str] = []

    def enter(self, path: str) -> str | None:
        if path == self.fail:
            raise OSError(13, "Permission denied")
        return f"spool {path} skipped: test" if path == self.refuse else None

    def leave(self, path: str) -> None:
        self.left.append(path)

    def close(self) -> None:
        self.closed = True


def test_breaker_warnings_as_the_full_path(base: Path) -> None:
    """A refused spool is skipped with the breaker's reason; a failing breaker is dropped, warned."""
    spools = []
    for name in ("one", "two", "three"):
        (base / name).mkdir()
        spools.append(_one_spool(base / name, ("a",)))
    cfg = config_from_mapping({"spool": [{"path": str(s)} for s in spools]})
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    full = _Breaker(str(spools[0]), str(spools[1]))
    user = mail_user_from_environ(env, cfg.identity)
    p = plan(cfg, user, env, keep_skipped=False, breaker=full)  # type: ignore[arg-type]
    profile = compile_profile(cfg)
    assert profile is not None
    lean = _Breaker(str(spools[0]), str(spools[1]))

    assert (p.environ, list(p.warnings)) == compute(profile, env, breaker=lean, user_tasks=False)
    assert 2 == len(p.warnings)
    assert lean.closed
    assert [] == lean.left  # dropped after it failed, as the full path drops it


def test_filesystem_errors_are_nsprov_errors(base: Path) -> None:
    """An unexpected OSError of the scan reaches the caller as an NsprovError (it runs the full path)."""
    spool = _one_spool(base, ("a",))

    def lstat(path: bytes) -> os.stat_result:
        if path.endswith(b"/a"):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return os.lstat(path)

    profile = compile_profile(config_from_mapping({"spool": [{"path": str(spool)}]}))
    assert profile is not None
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    with pytest.raises(LeanError, match="Permission denied"):
        compute(profile, env, fs=Fs(lstat=lstat), user_tasks=False)
    with pytest.raises(SpoolError):
        compute({**profile, "spools": ({**profile["spools"][0], "path": str(base / "no")},)}, env)


def test_breaker_closed_when_nothing_runs(base: Path) -> None:
    """A protocol without actions still closes the breaker it was given."""
    cfg = config_from_mapping(
        {
            "spool": [{"path": str(_one_spool(base))}],
            "actions": {"imap": ["namespaces"], "pop3": []},
        }
    )
    profile = compile_profile(cfg)
    assert profile is not None
    breaker = _Breaker("", "")
    assert ({}, []) == compute(profile, {"USER": "u"}, protocol="pop3", breaker=breaker)
    assert breaker.closed


@ROOT_ONLY
@pytest.mark.parametrize(
    ("version", "names", "cut"),
    [
        ("2.4", tuple(f"mailbox-with-a-long-name-{i:05d}" for i in range(1300)), True),
        ("2.3", tuple(f"box{i:04d}" for i in range(1000)), False),  # 1,000 on 2.3 all fit
    ],
)
def test_kernel_limits_as_the_full_path(
    base: Path, version: str, names: tuple[str, ...], cut: bool
) -> None:
    """Many namespaces: the same variables within the kernel's limits, the same cut and warning."""
    spool = _one_spool(base, names)
    cfg = config_from_mapping(
        {
            "spool": [{"path": str(spool)}],
            "namespace": {"max": 5000},
            "dovecot": {"version": version},
        }
    )
    env = {"USER": "u", "UID": "70001", "GID": "70001", "HOME": "/home/u"}
    expected = full_path(cfg, env)
    profile = compile_profile(cfg)
    assert profile is not None

    assert expected == compute(profile, env, user_tasks=False)
    assert cut == any("fit the kernel's environment limits" in w for w in expected[1])
    if not cut:
        assert len(names) == sum(k.endswith("/PREFIX") for k in expected[0])


@pytest.mark.parametrize("dialect", ["2.3", "2.4"])
@pytest.mark.parametrize(
    "keys", [(), ("NAMESPACE+",), ("MAIL_DRIVER",), ("MAIL_PATH",), ("MAIL",), ("MAIL_LOCATION",)]
)
def test_version_signs_are_the_workers(dialect: str, keys: tuple[str, ...]) -> None:
    """The lean path warns of the other dialect's userdb fields exactly as the full worker."""
    from nsprov import _lean

    env = dict.fromkeys(keys, "x")
    assert version_signs(env, dialect) == _lean.version_signs(env, dialect)


class TestLazyGroups:
    """The lean login looks the supplementary groups up only when a verdict depends on them."""

    @staticmethod
    def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Record each supplementary-group lookup, which still runs for real."""
        calls: list[str] = []
        real = _plainscan.groups_of

        def spy(**kw: Any) -> frozenset[int]:
            calls.append(kw["system_groups_user"])
            return real(**kw)

        monkeypatch.setattr(_plainscan, "groups_of", spy)
        return calls

    def test_0755_spool_login_looks_up_nothing(
        self, base: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """0755 directories (group bits == other bits): served, getgrouplist never called."""
        spool = _one_spool(base)
        cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
        profile = compile_profile(cfg)
        assert profile is not None
        env = {**LAZY_ENV, "HOME": str(base / "home")}
        calls = self._spy(monkeypatch)

        changes, _ = compute(profile, env, user_tasks=False)

        assert (3, []) == (sum(k.endswith("/PREFIX") for k in changes), calls)

    @ROOT_ONLY
    def test_group_decides_looks_up_once(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A 0750 entry of a group not the user's primary one: one lookup, the full path's answer."""
        spool = _one_spool(base)
        os.chown(spool / "b", 0, 70009)
        (spool / "b").chmod(0o750)
        cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
        profile = compile_profile(cfg)
        assert profile is not None
        env = {**LAZY_ENV, "HOME": str(base / "home")}
        expected = full_path(cfg, env)
        calls = self._spy(monkeypatch)

        got = compute(profile, env, user_tasks=False)

        assert (expected, ["root"]) == (got, calls)


#: A login whose userdb names a system groups user (userdb passwd's system_groups_user).
LAZY_ENV = {"USER": "u", "UID": "70001", "GID": "70001", "SYSTEM_GROUPS_USER": "root"}


def _forked(work: Callable[[], object]) -> object:
    """Run *work* in a forked child (it may drop privileges for good); its repr'd result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            out = repr(work()).encode()
        except BaseException as e:
            out = repr(("error", repr(e))).encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return ast.literal_eval(data.decode())


@ROOT_ONLY
class TestIndexDirs:
    """Existing index directories are confirmed as the user, without dropping root for good."""

    def _setup(self, base: Path) -> tuple[dict[str, Any], dict[str, str], Path]:
        spool = _one_spool(base)
        home = base / "home"
        home.mkdir()
        os.chown(home, 70001, 70001)
        cfg = config_from_mapping({"spool": [{"path": str(spool)}]})
        profile = compile_profile(cfg)
        assert profile is not None
        return profile, {**LAZY_ENV, "HOME": str(home)}, home

    #: The namespaces alone (compute) and every action (run_login, what run_lean calls).
    ENTRIES = pytest.mark.parametrize(
        "entry",
        [
            compute,
            lambda profile, env: run_login(profile, env, protocol="imap"),
        ],
        ids=["compute", "run_login"],
    )

    @ENTRIES
    def test_present_no_drop_no_lookup(
        self, base: Path, monkeypatch: pytest.MonkeyPatch, entry: Callable[..., object]
    ) -> None:
        """All there: one stat each as the user, root's ids back afterwards, no group lookup."""
        profile, env, home = self._setup(base)
        _forked(lambda: bool(entry(profile, env)))  # creates them as the user
        made = sorted(p.name for p in (home / ".nsprov").iterdir())
        calls = TestLazyGroups._spy(monkeypatch)

        def login() -> object:
            entry(profile, env)
            return os.getresuid(), os.getresgid(), calls

        assert ((0, 0, 0), (0, 0, 0), []) == _forked(login)
        assert 3 == len(made)

    @ENTRIES
    def test_missing_made_as_user(self, base: Path, entry: Callable[..., object]) -> None:
        """One removed: the process drops to the user (groups looked up) and makes it, 0700."""
        profile, env, home = self._setup(base)
        _forked(lambda: bool(entry(profile, env)))
        gone = next((home / ".nsprov").iterdir())
        gone.rmdir()

        def login() -> object:
            entry(profile, env)
            return os.getresuid()

        assert (70001, 70001, 70001) == _forked(login)
        assert (70001, 0o700) == (gone.stat().st_uid, gone.stat().st_mode & 0o777)

    def test_not_root_checks_every_path(self, tmp_path: Path) -> None:
        """Without root, missing_dirs leaves every path to ensure_dirs (it runs as this identity)."""

        def unprivileged() -> object:
            os.setgid(70001)
            os.setuid(70001)
            return _plainscan.missing_dirs(70001, 70001, [str(tmp_path), "/nonexistent"])

        assert [str(tmp_path), "/nonexistent"] == _forked(unprivileged)


def _plain_steps(steps: Sequence[tuple[bytes, int, Any]]) -> list[object]:
    """Anchored steps as comparable tuples (the ACL as its entries)."""

    def acl(a: Any) -> object:
        return None if a is None else (a.user_obj, a.group_obj, a.other, a.mask, a.users, a.groups)

    return [
        (name, mode, None if f is None else (f.mode, f.uid, f.gid, acl(f.acl)))
        for name, mode, f in steps
    ]


@ROOT_ONLY
def test_walk_without_proc(base: Path) -> None:
    """In a chroot without /proc, cur's and new's ACLs are read through a descriptor: same facts."""
    spool = _one_spool(base, ("a",))
    grant = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, users=[(70001, 5)])
    os.setxattr(spool / "a" / "cur", ACL_XATTR, grant.to_xattr())
    expected = _plain_steps(anchored_facts(os.fsencode(spool), [b"a"]))

    def inside() -> object:
        os.chroot(base)
        os.chdir("/")
        return _plain_steps(anchored_facts(b"/spool", [b"a"]))

    assert not (base / "proc").exists()
    assert expected == _forked(inside)
    assert (5, ((70001, 5),)) == (expected[1][2][3][3], expected[1][2][3][4])  # type: ignore[index]


# --- every action on the lean path: the full worker's frames, byte for byte --------------------

USER_GLOBS = ("lean-*", "lean?user", "other", "*x*", "[kl]ean*", "*")
NETWORKS = ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "::ffff:0:0/96", "0.0.0.0/0")
GROUP_GLOBS = ("mail", "daemon", "user*", "7000?", "ro?t", "[dm]*")
ADDRESSES = ("10.1.2.3", "192.0.2.7", "2001:db8::5", "::ffff:10.0.0.1", "", "junk", "203.0.113.9")
TEXTS = ("Hello {user}", "from {ip} via {protocol}", "line\r\nbreak", "{missing}", "50% {home}")


def _lists(values: Sequence[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), max_size=2, unique=True)


deny_tables = st.fixed_dictionaries(
    {},
    optional={
        "users": _lists(USER_GLOBS),
        "networks": _lists(NETWORKS),
        "local_networks": _lists(NETWORKS),
        "groups": _lists(GROUP_GLOBS),
        "allow_users": _lists(USER_GLOBS),
        "allow_networks": _lists(NETWORKS),
        "allow_local_networks": _lists(NETWORKS),
        "allow_groups": _lists(GROUP_GLOBS),
        "default": st.sampled_from(("allow", "deny")),
        "message": st.sampled_from(("Go away.", "No\r\nentry for {user}", "Nein")),
    },
)
alert_tables = st.lists(
    st.fixed_dictionaries(
        {"text": st.sampled_from(TEXTS)},
        optional={"if_exists": st.sampled_from(("{home}/flag", "/nonexistent/flag", "{nope}"))},
    ),
    max_size=2,
)
field_tables = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(("x", "quota_rule", "acl_groups")),
            "value": st.sampled_from((*TEXTS, "{user}@{local_ip}")),
            "mode": st.sampled_from(("set", "append", "default")),
        },
        optional={"separator": st.sampled_from((",", ";")), "literal_percent": st.booleans()},
    ),
    max_size=3,
)
action_configs = st.fixed_dictionaries(
    {
        "version": st.sampled_from(("2.3", "2.4")),
        "on_error": st.sampled_from(("continue", "continue", "deny")),
        "create_dirs": st.booleans(),
        "deny": st.none() | deny_tables,
        "alert": alert_tables,
        "acl_groups": st.none()
        | st.fixed_dictionaries(
            {}, optional={"include": _lists(GROUP_GLOBS), "exclude": _lists(GROUP_GLOBS)}
        ),
        "last_login": st.none() | st.just({"path": "{home}/.nsprov/last-login"}),
        "field": field_tables,
        "order": st.none() | st.randoms(use_true_random=False),
    }
)
login_envs = st.fixed_dictionaries(
    {
        "gid": st.sampled_from((8, 100, 1, 70001)),
        "access": _lists(("daemon", "mail", "users")),
        "ip": st.sampled_from(ADDRESSES),
        "local_ip": st.sampled_from(ADDRESSES),
        "home": st.sampled_from((True, True, True, False)),
        "flag": st.booleans(),
        "protocol": st.sampled_from(("imap", "imap", "pop3", None)),
    }
)


def _toml(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return json.dumps(value)


def actions_toml(spool: Path, c: Mapping[str, Any]) -> str:
    """A config file of the spool and the drawn actions (with a drawn [actions] order, or none)."""
    lines = [
        f'[dovecot]\nversion = "{c["version"]}"',
        f'[postlogin]\non_error = "{c["on_error"]}"',
        f"[namespace]\ncreate_dirs = {_toml(c['create_dirs'])}",
        f"[[spool]]\npath = {_toml(str(spool))}",
    ]
    configured = []
    for table in ("deny", "acl_groups", "last_login"):
        if c[table] is not None:
            configured.append(table)
            body = "".join(f"{k} = {_toml(v)}\n" for k, v in c[table].items())
            lines.append(f"[{table}]\n{body}")
    for table, name in (("alert", "alert"), ("field", "fields")):
        if c[table]:
            configured.append(name)
        for t in c[table]:
            lines.append(f"[[{table}]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in t.items()))
    if c["order"] is not None:
        names = [*configured, "namespaces"]
        rnd = c["order"]
        lists = {}
        for proto in ("imap", "pop3", "default"):
            rnd.shuffle(names)
            lists[proto] = names[: rnd.randint(0, len(names))]
        lines.append("[actions]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in lists.items()))
    return "\n".join(lines) + "\n"


def _frames(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        out.append((data[:1], data[5 : 5 + size]))
        data = data[5 + size :]
    return out


def _comparable(frames: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The frames without the deadline/policy head and the breaker's scan markers; the login
    line's served count only (the lean scan keeps no skip records)."""
    out = []
    for tag, payload in frames:
        if tag in (T_DEADLINE, T_POLICY, T_SCAN):
            continue
        out.append((tag, payload.split(b" ")[0] if tag == T_LOGIN else payload))
    return out


def _last_login(home: Path) -> tuple[str, int] | None:
    """The last-login file's line without its time, and its owner; then removed."""
    path = home / ".nsprov" / "last-login"
    if not path.exists():
        return None
    text, owner = path.read_text(), path.stat().st_uid
    path.unlink()
    return text.split(" ", 1)[1], owner


@ROOT_ONLY
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=action_configs, login=login_envs)
def test_lean_actions_equal_full_worker(
    base: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], login: dict[str, Any]
) -> None:
    """Random action configs, protocols, users, addresses and groups: the lean worker sends the
    full worker's frames (env, client lines, denial), logs its lines, writes its last-login file
    as the user; it hands the login to the full path only where that fails under on_error=deny."""
    import nsprov._breaker
    import nsprov._worker
    from nsprov._postlogin import T_CLIENT, T_DENY, T_FAIL
    from nsprov._profile import postlogin_part, run_lean

    monkeypatch.setattr(nsprov._worker, "cache_dir", lambda: None)
    state = base / "state"
    monkeypatch.setattr(nsprov._breaker, "spool_state_dir", lambda: str(state))
    spool = base / "spool"
    if not spool.exists():
        _one_spool(base, ("a", "b"))
        (base / "home").mkdir()
        os.chown(base / "home", 70001, 70001)
    home = base / "home"
    shutil.rmtree(home / ".nsprov", ignore_errors=True)
    (home / "flag").unlink(missing_ok=True)
    if login["flag"]:
        (home / "flag").touch()
    conf = base / "nsprov.toml"
    conf.write_text(actions_toml(spool, config))
    try:
        cfg = load_config(str(conf))
    except NsprovError as e:
        event(f"config refused: {type(e).__name__}")
        return
    profile = compile_profile(cfg)
    if profile is None:  # every drawn action runs lean: only a config without any is left out
        assert "no action" == why_full(cfg)
        return
    a = cfg.actions
    profile["postlogin"] = postlogin_part(
        deadline=cfg.deadline,
        on_error=cfg.on_error,
        dialect=cfg.dialect,
        debug_users=cfg.debug_users,
        actions=(a.imap, a.pop3, a.default),
        log_logins=cfg.log_logins,
    )
    profile = marshal.loads(marshal.dumps(profile))  # noqa: S302 - our own bytes
    env = {
        "USER": "lean-user",
        "UID": "70001",
        "GID": str(login["gid"]),
        "MAIL_ACCESS_GROUPS": ",".join(login["access"]),
        "IP": login["ip"],
        "LOCAL_IP": login["local_ip"],
        "USERDB_KEYS": "UID GID " + ("HOME " if login["home"] else ""),
    }
    if login["home"]:
        env["HOME"] = str(home)
    opts = Options()
    opts.config, opts.protocol, opts.next = str(conf), login["protocol"], ["/nonexistent/x"]

    full_out, full_err = _in_child(lambda fd: worker_run(fd, opts, env))
    full_file = _last_login(home)
    shutil.rmtree(home / ".nsprov", ignore_errors=True)
    fell_back = base / "fell-back"
    fell_back.unlink(missing_ok=True)

    def fallback(fd: int, o: Options, e: Mapping[str, str], why: str) -> None:
        fell_back.write_text(why)
        worker_run(fd, o, e)

    lean_out, lean_err = _in_child(lambda fd: run_lean(fd, opts, env, profile, full=fallback))
    lean_file = _last_login(home)

    full, lean = _frames(full_out), _frames(lean_out)
    event(f"protocol {login['protocol']}: " + ",".join(sorted({t.decode() for t, _ in full})))
    if fell_back.exists():  # only where the full path reports a failure the lean path leaves it
        event(f"full path: {fell_back.read_text()}")
        assert T_FAIL in {t for t, _ in full} or b"namespaces: " in full_err, lean_err
    else:
        assert T_FAIL not in {t for t, _ in full}
    assert _comparable(full) == _comparable(lean)
    assert full_err == lean_err
    assert full_file == lean_file
    if full_file is not None:
        assert 70001 == full_file[1]  # written as the user
    assert (T_DENY in {t for t, _ in lean}) <= (config["deny"] is not None)
    if T_CLIENT in {t for t, _ in lean}:
        event("client lines")


# --- run_login in-process: each action's branch (the forked equivalence test above runs them
# --- too, where coverage cannot see)


def _action_profile(base: Path, text: str) -> dict[str, Any]:
    spool = _one_spool(base)
    conf = base / "nsprov.toml"
    conf.write_text(f'[[spool]]\npath = "{spool}"\n[namespace]\ncreate_dirs = false\n{text}')
    profile = compile_profile(load_config(str(conf)))
    assert profile is not None
    return marshal.loads(marshal.dumps(profile))  # type: ignore[no-any-return]  # noqa: S302


LOGIN_ENV = {
    "USER": "lean-user",
    "UID": "70001",
    "GID": "70001",
    "HOME": "/home/lean",
    "USERDB_KEYS": "HOME ",
    "IP": "192.0.2.9",
}


@pytest.mark.parametrize(
    ("protocol", "line"),
    [
        ("imap", b"* BYE [ALERT] No entry for you.\r\n"),
        ("pop3", b"-ERR [SYS/PERM] No entry for you.\r\n"),
        (None, None),
    ],
)
def test_run_login_deny(base: Path, protocol: str | None, line: bytes | None) -> None:
    """A matching network denies with the protocol's line; the actions after it do not run."""
    profile = _action_profile(
        base,
        '[deny]\nnetworks = ["192.0.2.0/24"]\nmessage = "No entry\\r\\nfor you."\n'
        '[[alert]]\ntext = "never"\n[actions]\nimap = ["deny", "alert", "namespaces"]\n'
        'pop3 = ["deny"]\ndefault = ["deny", "namespaces"]\n',
    )
    out = run_login(profile, LOGIN_ENV, protocol=protocol, user_tasks=False)
    assert (True, line, [], {}, None) == (out.denied, out.deny, out.client, out.changes, out.served)
    allowed = run_login(
        profile, {**LOGIN_ENV, "IP": "::ffff:10.0.0.1"}, protocol=protocol, user_tasks=False
    )
    assert not allowed.denied
    assert ("NAMESPACE" in allowed.changes) == (protocol != "pop3")


def test_run_login_actions_in_order(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alerts (one conditional), acl_groups, the last-login file and fields, in [actions] order;
    the user's tasks after every action (here without the privilege drop: root writes)."""
    import nsprov._lean

    home = base / "home"
    (home / "flag").parent.mkdir()
    (home / "flag").touch()
    profile = _action_profile(
        base,
        '[deny]\ngroups = ["nomatch-*"]\nallow_users = ["admin"]\n'
        '[[alert]]\ntext = "Hi {user}"\n'
        '[[alert]]\ntext = "Flag"\nif_exists = "{home}/flag"\n'
        '[[alert]]\ntext = "No flag"\nif_exists = "{home}/none"\n'
        "[acl_groups]\n[last_login]\n"
        '[[field]]\nname = "acl_groups"\nvalue = "extra"\nmode = "append"\n'
        '[[field]]\nname = "quota_rule"\nvalue = "50%"\nliteral_percent = true\n'
        '[actions]\nimap = ["fields", "deny", "alert", "acl_groups", "last_login", "namespaces"]\n',
    )
    monkeypatch.setattr(nsprov._lean, "drop_privileges", lambda *_a: None)
    env = {**LOGIN_ENV, "GID": "8", "HOME": str(home)}
    out = run_login(profile, env, protocol="imap")
    assert [b"* OK [ALERT] Hi lean-user\r\n", b"* OK [ALERT] Flag\r\n"] == out.client
    assert "extra,mail" == out.changes["ACL_GROUPS"]
    assert "50%%" == out.changes["QUOTA_RULE"]
    assert out.changes["USERDB_KEYS"].startswith("HOME ACL_GROUPS QUOTA_RULE ")
    assert [] == out.errors
    assert (home / ".nsprov" / "last-login").read_text().endswith(" imap 192.0.2.9\n")
    assert 3 == out.served


def test_run_login_errors(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing action is one error line and the next one runs; a failing task too;
    under on_error = "deny" the login goes to the full path."""
    import nsprov._lean

    text = (
        '[[alert]]\ntext = "{nope}"\n[[field]]\nname = "x"\nvalue = "1"\n'
        '[last_login]\npath = "{home}/missing/dir/last-login"\n'
    )
    profile = _action_profile(base, text)
    monkeypatch.setattr(nsprov._lean, "drop_privileges", lambda *_a: None)
    env = {**LOGIN_ENV, "HOME": str(base / "no-home")}
    (base / "no-home").write_text("a file, not a directory")
    out = run_login(profile, env, protocol="imap")
    assert "1" == out.changes["X"]
    assert 2 == len(out.errors), out.errors
    assert out.errors[0] == "alert: no value for field {nope} in '{nope}'"
    assert out.errors[1].startswith("last-login file: ")
    with pytest.raises(FullPathNeeded, match="action alert failed, on_error = deny"):
        run_login({**profile, "on_error": "deny"}, env, protocol="imap", user_tasks=False)


def test_run_login_full_path_cases(base: Path) -> None:
    """Another schema, a failing namespaces action, an action it does not run, a user without
    an identity for the user's tasks: the full path serves; another Dovecot: no namespaces."""
    profile = _action_profile(base, "[last_login]\n")
    with pytest.raises(FullPathNeeded, match="schema"):
        run_login({**profile, "schema": 0}, LOGIN_ENV, protocol="imap")
    with pytest.raises(FullPathNeeded, match="the namespaces action failed"):
        run_login(profile, {"USER": "u"}, protocol="imap")
    odd = {**profile, "actions": {**profile["actions"], "imap": ("mail",)}}
    with pytest.raises(FullPathNeeded, match="mail runs on the full path"):
        run_login(odd, LOGIN_ENV, protocol="imap")
    pop3 = {**profile, "actions": {**profile["actions"], "pop3": ("last_login",)}}
    with pytest.raises(FullPathNeeded, match="the user's tasks"):
        run_login(pop3, {"USER": "u", "HOME": "/h", "USERDB_KEYS": "HOME "}, protocol="pop3")
    out = run_login(profile, LOGIN_ENV, protocol="imap", installed="2.4", user_tasks=False)
    assert "NAMESPACE" not in out.changes
    assert "Dovecot 2.4 is installed" in out.warnings[0]
