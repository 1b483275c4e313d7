#!/usr/bin/env bash
# Builds Ory Hydra v2.3.0 into bin/hydra as a Go tool of the pinned scratch
# module scripts/hydra (go.mod + go.sum, `tool github.com/ory/hydra/v2`).
#
# Idempotent: does nothing when bin/hydra exists and bin/.hydra-version
# holds the pinned version. Set HYDRA_FORCE=1 to rebuild anyway.
#
# Built without cgo: no C compiler and no SQLite; the tests and the demo run
# Hydra on PostgreSQL (scripts/install-postgres.sh). Hydra's go.mod replaces
# github.com/gobuffalo/pop/v6 with Ory's fork; a dependency's replace
# directives are ignored, so scripts/hydra/go.mod repeats it.
#
# GOFLAGS from the environment is passed through, less -mod=vendor (no vendor
# directory here); without a -mod flag go.mod and go.sum are used as committed.
set -euo pipefail

# Pinned version: keep in step with scripts/hydra/go.mod.
HYDRA_MODULE=github.com/ory/hydra/v2
HYDRA_VERSION=v2.3.0
POP_REPLACE="github.com/ory/pop/v6 v6.2.1-0.20241121111754-e5dfc0f3344b"
STAMP_TEXT="${HYDRA_MODULE} ${HYDRA_VERSION} pop ${POP_REPLACE} cgo=0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD_DIR="${ROOT}/scripts/hydra"
BIN_DIR="${ROOT}/bin"
BIN="${BIN_DIR}/hydra"
STAMP="${BIN_DIR}/.hydra-version"

log() { printf 'install-hydra: %s\n' "$*" >&2; }
die() { printf 'install-hydra: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${HYDRA_FORCE:-0}" != 1 && -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${STAMP_TEXT}" ]]; then
	log "up to date: ${BIN} (${STAMP_TEXT}); set HYDRA_FORCE=1 to rebuild"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH; install the Go toolchain named in ${ROOT}/go.mod"
[[ -f "${MOD_DIR}/go.mod" && -f "${MOD_DIR}/go.sum" ]] || die "missing ${MOD_DIR}/go.mod or go.sum"
grep -q "^	${HYDRA_MODULE} ${HYDRA_VERSION} // indirect\$" "${MOD_DIR}/go.mod" ||
	die "${MOD_DIR}/go.mod does not require ${HYDRA_MODULE} ${HYDRA_VERSION}; update the script and go.mod together"
grep -q "^replace github.com/gobuffalo/pop/v6 => ${POP_REPLACE}\$" "${MOD_DIR}/go.mod" ||
	die "${MOD_DIR}/go.mod does not replace github.com/gobuffalo/pop/v6 with ${POP_REPLACE}"

goflags=()
for f in ${GOFLAGS:-}; do
	[[ "${f}" == -mod=vendor ]] && { log "ignoring GOFLAGS ${f}"; continue; }
	goflags+=("${f}")
done
export GOFLAGS="${goflags[*]:-}"
# scripts/hydra is its own module: never let a go.work at the repo root take over.
export GOWORK=off
export CGO_ENABLED=0

mkdir -p "${BIN_DIR}"
tmp="$(mktemp "${BIN_DIR}/.hydra.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT

log "building ${HYDRA_MODULE} ${HYDRA_VERSION} -> ${BIN}"
log "  in ${MOD_DIR}: go build (GOFLAGS='${GOFLAGS}', $(go env GOVERSION)); a cold build takes minutes"
start=${SECONDS}
(cd "${MOD_DIR}" && go build -buildvcs=false \
	-ldflags "-X github.com/ory/hydra/v2/driver/config.Version=${HYDRA_VERSION}" \
	-o "${tmp}" "${HYDRA_MODULE}")
chmod 0755 "${tmp}"
mv -f "${tmp}" "${BIN}"
trap - EXIT
printf '%s\n' "${STAMP_TEXT}" >"${STAMP}"
log "built ${BIN} in $((SECONDS - start))s: $("${BIN}" version 2>&1 | grep -m1 -i version || true)"
