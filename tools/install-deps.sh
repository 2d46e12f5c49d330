#!/bin/sh
# Install the Debian packages gatemq needs to build, test and benchmark, if any
# is missing. Runs apt-get only when something is missing.
set -e
PKGS="build-essential pkg-config libev-dev libmbedtls-dev libsqlite3-dev libcmocka-dev
      libjson-c-dev libcurl4-openssl-dev clang libclang-rt-14-dev valgrind
      mosquitto mosquitto-clients openssl influxdb influxdb-client"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "gatemq: installing missing packages:$missing"
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "gatemq: run as root, or install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
${SUDO:-} apt-get update -qq
${SUDO:-} apt-get install -y -qq --no-install-recommends $missing
