#!/usr/bin/env bash
# Install what a fresh machine lacks, then print the Python interpreter to run notifier with.
#
# 1. Redis and PostgreSQL server binaries (Debian packages, when run as root; otherwise the
#    exact apt command to run).
# 2. A project virtual environment, .venv (override with VENV=dir), made from $PYTHON
#    (default python3), so Debian 12 / Ubuntu 24.04's externally managed Python (PEP 668) is
#    never pip-installed into. If $PYTHON is itself a virtual environment, it is used as it is;
#    VENV= (empty) installs into $PYTHON directly, as before.
# 3. notifier itself, editable, with its test extras, only when pyproject.toml, the checkout or
#    the interpreter changed since the last install (a stamp file in the environment), so a
#    second `make dev` starts at once.
#
# Progress goes to stderr; the one line on stdout is the interpreter (`make` runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bootstrap: $*" >&2; }

as_root_apt() {  # as_root_apt WHAT PACKAGE
  if [ "$(id -u)" != 0 ]; then
    say "$1 is missing; install it (Debian/Ubuntu: sudo apt-get install -y $2)"
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  say "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

command -v redis-server >/dev/null 2>&1 || as_root_apt redis-server redis-server
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  as_root_apt "PostgreSQL (initdb)" postgresql
fi

PYTHON=${PYTHON:-python3}
VENV=${VENV-.venv}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  say "$PYTHON not found; set PYTHON=/path/to/python3 (3.11 or newer)"
  exit 1
fi

in_venv=$("$PYTHON" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if [ "$in_venv" = 1 ] || [ -z "$VENV" ]; then
  target=$PYTHON
else
  target=$VENV/bin/python
  # A missing, half-made (no pip) or orphaned (its base Python gone) environment is made anew.
  if ! "$target" -m pip --version >/dev/null 2>&1; then
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
      # Debian and Ubuntu ship venv's ensurepip separately: python3.X-venv.
      version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      as_root_apt "Python's venv module (python$version-venv)" "python$version-venv"
    fi
    say "creating the virtual environment $VENV from $PYTHON"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
  fi
fi

# The stamp names what was installed: the project's dependencies, this checkout (an editable
# install points at it) and the interpreter.
prefix=$("$target" -c 'import sys; print(sys.prefix)')
stamp=$prefix/.notifier-bootstrap
want=$( { sha256sum pyproject.toml; pwd -P; "$target" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing notifier and its test extras into $prefix"
  "$target" -m pip install -q --disable-pip-version-check -e '.[test]' >&2
  echo "$want" 2>/dev/null >"$stamp" || say "could not write $stamp; the next run installs again"
fi
echo "$target"
