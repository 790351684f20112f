#!/usr/bin/env bash
# Installs the system packages the build and the tests need, from Debian's
# packages, when they are missing:
#
#   libssl-dev, pkg-config   librdkafka is built with TLS and SASL (SCRAM)
#   stunnel4, openssl        the TLS-terminating proxy of the security tests
#   postgresql               the database of the database tests (scripts/postgres.sh)
#
# Needs root (or sudo) only when something is missing.
set -euo pipefail
PACKAGES=(libssl-dev pkg-config stunnel4 openssl postgresql)

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "missing packages (${missing[*]}) and no sudo to install them" >&2; exit 1; }
    as_root=(sudo)
fi
echo "installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    "${as_root[@]}" apt-get update >&2
    "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
