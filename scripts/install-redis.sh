#!/usr/bin/env bash
# Installs Debian's redis-server and redis-sentinel (Redis 7.0 on bookworm)
# for the tests of the Redis store and of several replicas, unless they are
# already there. Needs root (apt-get) on a fresh machine. The tests start
# their own servers on free loopback ports; no service is used.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1; then
	echo "install-redis: $(redis-server --version | head -1) already installed" >&2
	exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
	echo "install-redis: ERROR: redis-server is missing and installing it needs root (apt-get install redis-server redis-sentinel)" >&2
	exit 1
fi
echo "install-redis: apt-get install redis-server redis-sentinel" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server redis-sentinel >/dev/null
# The package may start a service on port 6379 where an init system runs;
# the tests need none, and a stray one is stopped.
if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
redis-server --version >&2
