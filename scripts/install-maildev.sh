#!/usr/bin/env bash
# Installs MailDev 3.0.0 (the demo's mail catcher, with a web page) into
# scripts/maildev/node_modules from the committed package-lock.json, with
# `npm ci`. Start it with:
#   scripts/maildev/node_modules/.bin/maildev --ip 127.0.0.1 --web-ip 127.0.0.1 -s <smtp-port> -w <web-port>
#
# Idempotent: does nothing when node_modules/.bin/maildev exists and the stamp
# node_modules/.cibaproxy-lock.sha256 holds the SHA-256 of package-lock.json
# (written after a successful install). MAILDEV_FORCE=1 reinstalls anyway.
#
# Needs Node.js >= 20 (MailDev 3's engines) with npm, and the npm registry. On
# a root Debian machine without node or npm, it apt-get installs nodejs and npm
# first; Debian 12's own nodejs is 18, which is too old, and the script then
# says so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ROOT}/scripts/maildev"
LOCK="${DIR}/package-lock.json"
BIN="${DIR}/node_modules/.bin/maildev"
STAMP="${DIR}/node_modules/.cibaproxy-lock.sha256"
MIN_NODE_MAJOR=20

log() { printf 'install-maildev: %s\n' "$*" >&2; }
die() { printf 'install-maildev: ERROR: %s\n' "$*" >&2; exit 1; }

[[ -f "${DIR}/package.json" && -f "${LOCK}" ]] || die "missing ${DIR}/package.json or package-lock.json"
want="$(sha256sum "${LOCK}" | cut -d' ' -f1)"

if [[ "${MAILDEV_FORCE:-0}" != 1 && -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" ]]; then
	log "up to date: ${BIN} (lock ${want:0:12}); set MAILDEV_FORCE=1 to reinstall"
	exit 0
fi

# On a root Debian machine, install what is missing from the configured apt
# sources: nodejs first (NodeSource's nodejs brings its own npm), then npm.
apt_install() {
	if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
		return 0
	fi
	log "$1 not found; running: apt-get install -y $1"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq "$1" >/dev/null; then
		log "apt-get install failed; running: apt-get update && apt-get install -y $1"
		if apt-get update -qq; then
			apt-get install -y -qq "$1" >/dev/null || true
		fi
	fi
}
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v npm >/dev/null 2>&1 || apt_install npm
for tool in node npm; do
	if ! command -v "${tool}" >/dev/null 2>&1; then
		die "${tool} is required to install MailDev and is not on PATH; install Node.js >= ${MIN_NODE_MAJOR} with npm (Debian: apt-get install nodejs npm; Debian 12's nodejs is 18, too old: use NodeSource's nodejs 20) and re-run"
	fi
done

node_version="$(node --version)"
major="${node_version#v}"
major="${major%%.*}"
if ! [[ "${major}" =~ ^[0-9]+$ ]] || ((major < MIN_NODE_MAJOR)); then
	die "MailDev 3.0.0 needs Node.js >= ${MIN_NODE_MAJOR}, found ${node_version} at $(command -v node); install a newer Node.js (e.g. NodeSource's nodejs 20) and re-run"
fi

log "npm ci in ${DIR} (MailDev 3.0.0 and its locked dependencies; node ${node_version}, npm $(npm --version))"
start=${SECONDS}
rm -f "${STAMP}"
(cd "${DIR}" && npm ci --no-audit --no-fund --loglevel=error)
[[ -x "${BIN}" ]] || die "npm ci finished but ${BIN} is missing"
printf '%s\n' "${want}" >"${STAMP}"
log "installed ${BIN} in $((SECONDS - start))s: maildev $(node -p 'require(process.argv[1]).version' "${DIR}/node_modules/maildev/package.json")"
