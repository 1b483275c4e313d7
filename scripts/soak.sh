#!/usr/bin/env bash
# scripts/soak.sh — `make soak`: a chaos soak of the real binary (not part
# of make test; a few minutes).
#
# Builds the soak's program (cmd/cibasoak, into bin/cibasoak) and runs it in
# a fresh temporary directory. On free 127.0.0.1 ports, from configurations
# it writes there, the program starts:
#   cibaproxy (bin/cibaproxy)  a Caddyfile shaped like the demo's: three CIBA
#                              clients, request_ttl 2m, interval 1s, the rate
#                              limits off (every device shares one IP), on
#                              Badger, or on Redis with SOAK_STORE=redis
#   Dex       (bin/dex)        configured like scripts/dex/dex.yaml.tmpl, with
#                              one static client per CIBA client; issuer on
#                              cibaproxy's origin
#   redis-server               with SOAK_STORE=redis: appendonly yes,
#                              appendfsync always
#   an SMTP server of its own  receives the approval mails
# It starts them itself because it takes them down and brings them back:
# for SOAK_DURATION, SOAK_DEVICES consumption devices complete CIBA logins
# (backchannel request, the user approves or denies through the approval
# page as a browser does, polls as CIBA says, tokens checked against Dex's
# keys), while cibaproxy is killed with SIGKILL and restarted every 3–20 s,
# the mail server is down 10 s in every 45, Dex 5 s in every 60, and Redis
# is killed 2 s in every 50. It then prints the figures and exits non-zero
# on a lost request or approval, a double issuance, a wrong token or an
# unexpected answer (see the README, "Soak").
#
# Needs what `make tools build` installs: bin/cibaproxy, bin/dex, and for
# SOAK_STORE=redis redis-server. Every process is stopped when the program
# exits, and killed with it if it dies.
#
# Environment (defaults in brackets):
#   SOAK_DURATION [3m]   how long the devices start new logins (a Go
#                        duration, or seconds); the logins under way finish
#   SOAK_DEVICES [20]    concurrent consumption devices
#   SOAK_STORE [badger]  badger or redis
#   SOAK_SEED [1]        seed of every random choice (users, decisions,
#                        races, the chaos schedule)
#   SOAK_KEEP [0]        1: keep the directory (logs, logins.txt with the
#                        timeline of every login, outages.txt) on success
#                        too; it is always kept on failure
#   SOAK_ARGS            more flags for the program (bin/cibasoak -h)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/bin"
GO="${GO:-go}"
DURATION="${SOAK_DURATION:-3m}"
DEVICES="${SOAK_DEVICES:-20}"
STORE="${SOAK_STORE:-badger}"
SEED="${SOAK_SEED:-1}"

log() { printf 'soak: %s\n' "$*" >&2; }
die() {
	printf 'soak: ERROR: %s\n' "$*" >&2
	exit 1
}

[[ "${DURATION}" =~ ^[0-9]+$ ]] && DURATION="${DURATION}s"
[[ "${DURATION}" =~ ^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$ ]] || die "SOAK_DURATION must be a duration (3m, 90s) or seconds, not '${DURATION}'"
[[ "${DEVICES}" =~ ^[1-9][0-9]*$ ]] || die "SOAK_DEVICES must be a positive number, not '${DEVICES}'"
[[ "${SEED}" =~ ^[0-9]+$ ]] || die "SOAK_SEED must be a whole number, not '${SEED}'"
[[ "${STORE}" == badger || "${STORE}" == redis ]] || die "SOAK_STORE must be badger or redis, not '${STORE}'"
missing=()
[[ -x "${BIN}/cibaproxy" ]] || missing+=("${BIN}/cibaproxy (make build)")
[[ -x "${BIN}/dex" ]] || missing+=("${BIN}/dex (make dex)")
if [[ "${STORE}" == redis ]] && ! command -v redis-server >/dev/null 2>&1; then
	missing+=("redis-server (make redis)")
fi
((${#missing[@]} == 0)) || die "missing: ${missing[*]}; run: make tools build"

(cd "${ROOT}" && "${GO}" build -o "${BIN}/cibasoak" ./cmd/cibasoak) || die "building cmd/cibasoak failed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cibaproxy-soak.XXXXXX")"
SOAK_PID=""
forward() { # forward SIG: pass a signal on to the program, which stops everything
	[[ -n "${SOAK_PID}" ]] && kill "-$1" "${SOAK_PID}" 2>/dev/null || true
}
trap 'forward INT' INT
trap 'forward TERM' TERM

log "directory ${WORK}"
# shellcheck disable=SC2086 # SOAK_ARGS is a list of flags
"${BIN}/cibasoak" -dir "${WORK}" -proxy "${BIN}/cibaproxy" -dex "${BIN}/dex" -store "${STORE}" \
	-duration "${DURATION}" -devices "${DEVICES}" -seed "${SEED}" ${SOAK_ARGS:-} &
SOAK_PID=$!
status=0
# wait returns early when a trapped signal arrives; wait again for the exit.
while :; do
	wait "${SOAK_PID}" && status=0 || status=$?
	kill -0 "${SOAK_PID}" 2>/dev/null || break
done
if ((status != 0)); then
	log "FAILED (exit ${status}); logs, logins.txt and outages.txt kept in ${WORK}"
elif [[ "${SOAK_KEEP:-0}" == 1 ]]; then
	log "kept ${WORK}"
else
	rm -rf "${WORK}"
fi
exit "${status}"
