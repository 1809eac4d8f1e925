#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real (listed one per line in
# .ci/apt-packages.txt, '#' comments allowed) when they are missing. Needs root (CI runs as root);
# elsewhere it only says what is missing and the tests that need it skip, saying why.
set -euo pipefail
cd "$(dirname "$0")"
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "system-deps: missing ${missing[*]} (not root or no apt-get): tests that need them will skip" >&2
	exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
