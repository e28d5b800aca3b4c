#!/usr/bin/env bash
# Install what a fresh machine lacks: Redis and PostgreSQL server binaries (Debian packages,
# when run as root) and notifier itself with its test extras (editable, into this Python).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root_apt() {
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: $1 is missing; install it (Debian/Ubuntu: sudo apt-get install -y $2)" >&2
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

command -v redis-server >/dev/null 2>&1 || as_root_apt redis-server redis-server
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  as_root_apt "PostgreSQL (initdb)" postgresql
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'
