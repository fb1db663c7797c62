#!/usr/bin/env bash
# Install the Debian packages named on the command line when their tools are missing.
# Outside CI, without root, it only says what is missing (tests that need it then skip).
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "install-debs: missing ${missing[*]} and not root: tests that need them will skip" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
  fi
fi
echo "install-debs: installing ${missing[*]}"
${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
