#!/usr/bin/env bash
# Refuse early, with the fix, when the Python is too old or cannot make a venv.
set -euo pipefail
py=${1:-python3}
if ! command -v "$py" >/dev/null; then
  echo "error: $py not found. Install Python 3.11+ (Debian/Ubuntu: apt-get install python3 python3-venv)," >&2
  echo "       or run: make PYTHON=/path/to/python3.11 ..." >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $("$py" --version) is too old: hyperhive needs Python 3.11 or newer." >&2
  echo "       Run: make PYTHON=/path/to/python3.11 ..." >&2
  exit 1
fi
if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "error: $py cannot create virtual environments. Debian/Ubuntu: apt-get install python3-venv" >&2
  exit 1
fi
