#!/usr/bin/env bash
# Builds the Dex OpenID provider (v2.45.1, with RFC 8693 token exchange) into
# bin/dex from the pinned wrapper module scripts/dex (go.mod + go.sum).
#
# Idempotent: does nothing when bin/dex exists and bin/.dex-version
# holds the pinned version. Set DEX_FORCE=1 to rebuild anyway.
#
# Needs: go (the toolchain of go.mod) and the Go module proxy, or a module cache that already holds the modules of
# scripts/dex/go.sum (then GOPROXY=off works).
#
# GOFLAGS from the environment is passed through (e.g. -mod=mod lets go repair
# a go.sum that misses entries); only -mod=vendor is dropped, since scripts/dex
# has no vendor directory. Without a -mod flag the build is -mod=readonly, so
# go.mod and go.sum are used as committed.
set -euo pipefail

# Pinned version: keep in step with scripts/dex/go.mod.
DEX_MODULE=github.com/dexidp/dex
DEX_PSEUDO=v0.0.0-20260303133905-11d2eeb52b42 # commit 11d2eeb52b42 = tag v2.45.1
DEX_RELEASE=v2.45.1
DEX_API_VERSION=v2.4.0 # github.com/dexidp/dex/api/v2
STAMP_TEXT="${DEX_MODULE} ${DEX_PSEUDO} (${DEX_RELEASE}) api/v2 ${DEX_API_VERSION} cgo=0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD_DIR="${ROOT}/scripts/dex"
BIN_DIR="${ROOT}/bin"
BIN="${BIN_DIR}/dex"
STAMP="${BIN_DIR}/.dex-version"

log() { printf 'install-dex: %s\n' "$*" >&2; }
die() { printf 'install-dex: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${DEX_FORCE:-0}" != 1 && -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${STAMP_TEXT}" ]]; then
	log "up to date: ${BIN} (${STAMP_TEXT}); set DEX_FORCE=1 to rebuild"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH; install the Go toolchain named in ${ROOT}/go.mod"
[[ -f "${MOD_DIR}/go.mod" && -f "${MOD_DIR}/go.sum" ]] || die "missing ${MOD_DIR}/go.mod or go.sum"

# The wrapper module must pin the same version as this script.
if ! grep -q "^require ${DEX_MODULE} ${DEX_PSEUDO}\$" "${MOD_DIR}/go.mod"; then
	die "${MOD_DIR}/go.mod does not require ${DEX_MODULE} ${DEX_PSEUDO}; update the script and go.mod together"
fi

# Built without cgo: no C compiler needed, and the sqlite3 driver (the one
# cgo package) is left out, which saves a minute of a cold build. Dex's
# memory storage is what the tests and the demo use; sqlite3 storage is not
# available in this build.
# Drop -mod=vendor from GOFLAGS (no vendor dir here); keep everything else.
goflags=()
for f in ${GOFLAGS:-}; do
	[[ "${f}" == -mod=vendor ]] && { log "ignoring GOFLAGS ${f}"; continue; }
	goflags+=("${f}")
done
export GOFLAGS="${goflags[*]:-}"
# scripts/dex is its own module: never let a go.work at the repo root take over.
export GOWORK=off
export CGO_ENABLED=0

mkdir -p "${BIN_DIR}"
tmp="$(mktemp "${BIN_DIR}/.dex.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT

log "building ${DEX_MODULE}/cmd/dex ${DEX_PSEUDO} (${DEX_RELEASE}) -> ${BIN}"
log "  in ${MOD_DIR}: go build -buildvcs=false -ldflags '-X main.version=${DEX_RELEASE}' (GOFLAGS='${GOFLAGS}', $(go env GOVERSION))"
log "  a cold build takes minutes (it compiles Dex and gRPC); later builds use the Go build cache"
start=${SECONDS}
(cd "${MOD_DIR}" && go build -buildvcs=false -ldflags "-X main.version=${DEX_RELEASE}" -o "${tmp}" "${DEX_MODULE}/cmd/dex")
chmod 0755 "${tmp}"
mv -f "${tmp}" "${BIN}"
trap - EXIT
printf '%s\n' "${STAMP_TEXT}" >"${STAMP}"
log "built ${BIN} in $((SECONDS - start))s: $("${BIN}" version 2>&1 | head -n 1)"
