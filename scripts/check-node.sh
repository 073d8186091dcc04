#!/usr/bin/env bash
# The tests drive the real Claude Code CLI, which npm installs; it needs Node.js 18+.
set -euo pipefail
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "error: Node.js and npm are needed to install the pinned Claude Code CLI for the tests." >&2
  echo "       Debian/Ubuntu: apt-get install nodejs npm" >&2
  exit 1
fi
if ! node -e 'process.exit(parseInt(process.versions.node) >= 18 ? 0 : 1)'; then
  echo "error: Node.js $(node --version) is too old; Claude Code needs 18 or newer." >&2
  exit 1
fi
