#!/opt/nsprov/bin/python3 -I
"""Test accounts may log in only from the monitoring network: an nsprov hook script.

Accounts named like :data:`TEST_ACCOUNTS` exist for monitoring probes, never for people. A login
to one of them from anywhere but :data:`MONITORING_NETWORKS` is refused: an IMAP client gets
``* BYE [ALERT] <MESSAGE>``, a POP3 client ``-ERR [SYS/PERM] <MESSAGE>``, and Dovecot logs
"Post-login script denied access to user ...". Every other login goes on untouched.

Wire it like ``nsprov post-login``; the protocol decides how the client is told::

    service pop3-postlogin {
      executable = script-login /usr/local/lib/nsprov/deny_rule.py --protocol=pop3
      unix_listener pop3-postlogin {
      }
    }

script-login runs the script with an empty environment: no ``PATH``, so the ``#!`` line must name
the interpreter by its absolute path, one that can import nsprov (here a root-owned virtual
environment in ``/opt/nsprov``); ``#!/usr/bin/env python3`` fails. The rule needs no nsprov
configuration, so the line has no ``--config``.
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase

import nsprov

#: Glob patterns for the login names of test accounts.
TEST_ACCOUNTS = ("test-*", "*-test")
#: Client networks the monitoring probes log in from.
MONITORING_NETWORKS = ("192.0.2.0/24", "2001:db8:1::/48")
#: What a refused client is told.
MESSAGE = "Test accounts may log in only from the monitoring network."


def from_monitoring(ip: str) -> bool:
    """Whether the client address *ip* lies in one of :data:`MONITORING_NETWORKS`."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:  # empty: Dovecot did not know the client address
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n) for n in MONITORING_NETWORKS)


def hook(login: nsprov.Login) -> None:
    """Refuse a test account's login unless it comes from the monitoring network."""
    if any(fnmatchcase(login.user, p) for p in TEST_ACCOUNTS) and not from_monitoring(login.ip):
        login.deny(MESSAGE)


if __name__ == "__main__":
    nsprov.run_hook(hook)
