#!/usr/bin/env bash
# Debian packages the test suite drives for real (chromium: the browser tests, with a font
# for their screenshots; openssl: the throwaway CA and certificates of the Temporal TLS test).
# Installs only what is missing.
set -euo pipefail
packages=(postgresql bubblewrap nix-bin git util-linux chromium fonts-dejavu-core openssl)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "error: the tests need these packages: ${missing[*]} (no apt-get here: install them yourself)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing Debian packages for the tests: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
