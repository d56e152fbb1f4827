# shellcheck shell=bash
# Sourced by dev/test and dev/demo: a virtual environment with nsprov installed.
# As root on Debian it first installs the Debian packages the suite needs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${NSPROV_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

debian_packages() {
  # Installs what is missing; quiet when everything is there already.
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's dovecot packages try to start the service; keep them from doing so.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        debian_packages python3-venv
      else
        echo "python3 -m venv is not available: install python3-venv" >&2
        exit 1
      fi
    fi
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
}

install_nsprov() {
  # Install the package as a wheel, so the tests import what users would install.
  rm -rf "$ROOT/dist"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "hatchling>=1.26" build >/dev/null
  "$VENV/bin/python" -m build -q --wheel --no-isolation --outdir "$ROOT/dist" "$ROOT" >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$ROOT"/dist/nsprov-*.whl
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$ROOT"/dist/nsprov-*.whl
  # The wheel's bin/nsprov is the bash launcher; the direct one spares every login bash
  # (about 2 ms and 115 system calls), for ./dev/demo, ./dev/test and the live tests alike.
  # A refusal (say, a venv directory group may write) keeps the bash launcher, and says why.
  "$VENV/bin/nsprov" install-launcher >/dev/null || echo "== keeping the bash launcher" >&2
}
