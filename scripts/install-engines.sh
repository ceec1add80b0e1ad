#!/usr/bin/env bash
# Installs the real engines that `shopsim crosscheck` and its tests compare the simulated
# database with: PostgreSQL 15 and MariaDB 10.11, from Debian 12's own packages.
#
# Idempotent: an engine whose binaries are already there is left alone, and `apt-get update`
# runs once, only when something must be installed. Non-interactive. Installing needs root;
# without it the script says what is missing and exits 1.
#
# The packages' own service units are not used: shopsim starts private servers in temporary
# directories (crosscheck/src/server.rs). Where the package scripts start the system-wide
# servers, they are stopped again so that nothing listens on the default ports.
set -euo pipefail

pg_present() {
  [ -x /usr/lib/postgresql/15/bin/initdb ] && [ -x /usr/lib/postgresql/15/bin/postgres ]
}
maria_present() {
  command -v mariadb-install-db >/dev/null 2>&1 &&
    { [ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null 2>&1; }
}

packages=()
pg_present || packages+=(postgresql-15)
maria_present || packages+=(mariadb-server mariadb-client)

if [ ${#packages[@]} -eq 0 ]; then
  echo "install-engines: PostgreSQL 15 and MariaDB are present; nothing to do"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-engines: missing ${packages[*]}; run this script as root to install them" >&2
  exit 1
fi

echo "install-engines: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages from starting their system-wide services (policy-rc.d exit 101 = "do not
# start"); shopsim runs its own private servers. The file is removed again on any exit.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

pg_present || { echo "install-engines: postgresql-15 installed but initdb/postgres not found" >&2; exit 1; }
maria_present || { echo "install-engines: mariadb-server installed but mariadbd/mariadb-install-db not found" >&2; exit 1; }
echo "install-engines: done ($(/usr/lib/postgresql/15/bin/postgres --version); $(/usr/sbin/mariadbd --version 2>/dev/null | head -1))"
