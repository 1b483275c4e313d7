#!/usr/bin/env bash
# Installs Debian's PostgreSQL 15 server (initdb, pg_ctl in
# /usr/lib/postgresql/15/bin) for Ory Hydra in the end-to-end tests and the
# demo, unless it is already there. Needs root (apt-get) on a fresh machine.
# The tests start a private cluster of their own in a temporary directory on
# a free loopback port; the packaged service is not used.
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
if [[ -x "${PGBIN}/initdb" && -x "${PGBIN}/pg_ctl" && -x "${PGBIN}/postgres" ]]; then
	echo "install-postgres: $("${PGBIN}/postgres" --version) already installed" >&2
	exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
	echo "install-postgres: ERROR: PostgreSQL 15 is missing and installing it needs root (apt-get install postgresql-15)" >&2
	exit 1
fi
echo "install-postgres: apt-get install postgresql-15" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
# The package may start a cluster on port 5432 where an init system runs;
# nothing here needs it.
if command -v service >/dev/null 2>&1; then service postgresql stop >/dev/null 2>&1 || true; fi
"${PGBIN}/postgres" --version >&2
