"""The subjects: the ways of logging in that the benchmark compares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from tests.live.harness import write_script

from .syscalls import DEBIAN_PYTHON

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .spools import Configs
    from .target import Target


#: ``nsprov serve`` as this benchmark starts it (``nsprov serve --help``); default options.
SERVE_ARGV = ("serve", "--config={config}", "--socket={socket}")


SH_BODY = 'exec "$@"\n'


PERL_BODY = r"""use strict;
use warnings;

# Naive public namespaces, as the Dovecot documentation suggests (Dovecot 2.3 keys):
# every readable spool entry becomes a namespace named after the directory.
my $spool = '@SPOOL@';
my $home = $ENV{HOME} // '';
my (@names, @keys);
if (opendir(my $dh, $spool)) {
    foreach my $entry (sort readdir($dh)) {
        next if $entry =~ /^\./;
        next unless -r "$spool/$entry";
        my $var = "NAMESPACE/\U$entry\E";    # script-login reads upper-case variables only
        my $dir = "$home/.perlns/$entry";
        my %set = (
            TYPE      => 'public',
            SEPARATOR => '/',
            PREFIX    => "Shared/$entry/",
            LOCATION  => "maildir:$spool/$entry:INDEX=$dir:CONTROL=$dir",
        );
        foreach my $key (qw(TYPE SEPARATOR PREFIX LOCATION)) {
            $ENV{"$var/$key"} = $set{$key};
            push @keys, "$var/$key";
        }
        push @names, $entry;
    }
    closedir($dh);
}
if (@names) {
    $ENV{NAMESPACE} = join(' ', @names);
    $ENV{USERDB_KEYS} = ($ENV{USERDB_KEYS} // '') . join(' ', 'NAMESPACE', @keys) . ' ';
}
exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n";
"""


PY_ATTRS_BODY = """\
import os
import sys

import attrs  # noqa: F401 - the import is the point

os.execv(sys.argv[1], sys.argv[1:])
"""


@attrs.frozen(kw_only=True)
class Subject:
    """One way of logging in: a post-login program line, the serve wiring, or nothing."""

    name: str
    #: The script-login program line (``{socket}``: the subject's server); None: no post-login.
    program: str | None = None
    #: The command line of the subject's ``nsprov serve`` (``{socket}`` filled in later).
    serve_argv: tuple[str, ...] | None = None
    #: Wire the server as Dovecot's second userdb (dict, redis client).
    dict_userdb: bool = False
    #: Whether shared namespaces must arrive (checked, at least once per subject).
    nsprov: bool = False
    #: A config whose config-cache entry would show that the post-login worker ran.
    witness: Path | None = None


def nsprov_line(target: Target, config: Path) -> str:
    return f"{target.script} post-login --config={config} --protocol=imap"


def serve_command(target: Target, config: Path, extra: Sequence[str] = ()) -> tuple[str, ...]:
    args = (a.format(config=config, socket="{socket}") for a in SERVE_ARGV)
    return (str(target.script), *args, *extra)


def cold_body(target: Target, config: Path) -> str:
    """``nsprov-cold``: remove the config's login profile, then the step (an ``sh`` more)."""
    from .syscalls import profile_file  # noqa: PLC0415 - the snapshot's nsprov, imported late

    profile = profile_file(config)
    remove = f"/bin/rm -f '{profile}'\n" if profile is not None else ""
    return f'{remove}exec {nsprov_line(target, config)} "$@"\n'


def make_subjects(
    scripts: Path,
    spool: Path,
    configs: Configs,
    *,
    serve: bool,
    target: Target,
    serve_extra: Sequence[str] = (),
    baseline: Target | None = None,
) -> list[Subject]:
    scripts.mkdir(parents=True, exist_ok=True)
    sh = write_script(scripts / "sh", SH_BODY)
    perl = write_script(
        scripts / "perl-naive", PERL_BODY.replace("@SPOOL@", str(spool)), "/usr/bin/perl"
    )
    py = write_script(scripts / "python-attrs", PY_ATTRS_BODY, f"{target.python} -I")
    subjects = [
        Subject(name="none"),
        Subject(name="sh", program=str(sh)),
        Subject(name="perl-naive", program=str(perl)),
        Subject(name="python-attrs", program=str(py)),
        Subject(name="nsprov-ns", program=nsprov_line(target, configs.ns), nsprov=True),
        Subject(
            name="nsprov-ns-s",
            program=(
                f"{target.python} -I -S {target.src / 'nsprov' / '_fast.py'} "
                f"--config={configs.ns} --protocol=imap"
            ),
            nsprov=True,
        ),
        *(
            [
                Subject(
                    name="nsprov-ns-deb",
                    program=(
                        f"{DEBIAN_PYTHON} -I -S {target.src / 'nsprov' / '_fast.py'} "
                        f"--config={configs.ns} --protocol=imap"
                    ),
                    nsprov=True,
                )
            ]
            if Path(DEBIAN_PYTHON).exists()
            and Path(DEBIAN_PYTHON).resolve() != Path(target.python).resolve()
            else []
        ),
        Subject(
            name="nsprov-cold",
            program=str(write_script(scripts / "nsprov-cold", cold_body(target, configs.cold))),
            nsprov=True,
        ),
        Subject(name="nsprov-all", program=nsprov_line(target, configs.all), nsprov=True),
    ]
    if baseline is not None:
        line = nsprov_line(baseline, configs.base)
        subjects.append(Subject(name="nsprov-ns-base", program=line, nsprov=True))
    if serve:
        subjects += [
            Subject(
                name="nsprov-serve",
                serve_argv=serve_command(target, configs.ns, serve_extra),
                dict_userdb=True,
                nsprov=True,
            ),
            Subject(
                name="nsprov-fast",
                program=nsprov_line(target, configs.fast) + " --serve={socket}",
                serve_argv=serve_command(target, configs.fast, serve_extra),
                nsprov=True,
                witness=configs.fast,
            ),
            Subject(
                name="nsprov-fast-s",
                program=(
                    f"{target.python} -I -S {target.src / 'nsprov' / '_fast.py'} "
                    f"--config={configs.fast_s} --protocol=imap --serve={{socket}}"
                ),
                serve_argv=serve_command(target, configs.fast_s, serve_extra),
                nsprov=True,
                witness=configs.fast_s,
            ),
        ]
    return subjects
