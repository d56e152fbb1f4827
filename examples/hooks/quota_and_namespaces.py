#!/opt/nsprov/bin/python3 -I
"""A default storage quota and the shared namespaces: an nsprov hook script.

Users whose userdb entry carries no ``quota_rule`` get :data:`DEFAULT_QUOTA_RULE`; then the
namespaces action adds every public mailbox of the configured spools that the user may read.
Dovecot's quota plugin must be enabled (for example ``quota = count:User quota`` with
``quota_vsizes = yes``) for the rule to mean anything.

Wire it like ``nsprov post-login``, one post-login service per protocol::

    service imap-postlogin {
      executable = script-login /usr/local/lib/nsprov/quota_and_namespaces.py --config=/etc/nsprov/nsprov.toml --protocol=imap
      unix_listener imap-postlogin {
      }
    }

script-login runs the script with an empty environment: no ``PATH``, so the ``#!`` line must name
the interpreter by its absolute path, one that can import nsprov (here a root-owned virtual
environment in ``/opt/nsprov``); ``#!/usr/bin/env python3`` fails. Keep the script root-owned and
not writable by anyone else: it runs as root on every login.
"""

from __future__ import annotations

import nsprov

#: Dovecot quota rule for users whose userdb sets none (plugin setting: ``%`` would be expanded).
DEFAULT_QUOTA_RULE = "*:storage=1G"


def hook(login: nsprov.Login) -> None:
    """Default the quota rule, then add the shared namespaces from ``--config``."""
    login.default_field("quota_rule", DEFAULT_QUOTA_RULE)
    login.add_namespaces()


if __name__ == "__main__":
    nsprov.run_hook(hook)
