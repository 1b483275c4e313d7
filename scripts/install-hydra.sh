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
NAME=hydra
BIN="${ROOT}/bin/hydra"
STAMP="${ROOT}/bin/.hydra-version"
# shellcheck source=lib/gotool.sh
source "${ROOT}/scripts/lib/gotool.sh"

gotool_skip_if_current HYDRA_FORCE

grep -q "^	${HYDRA_MODULE} ${HYDRA_VERSION} // indirect\$" "${MOD_DIR}/go.mod" ||
	die "${MOD_DIR}/go.mod does not require ${HYDRA_MODULE} ${HYDRA_VERSION}; update the script and go.mod together"
grep -q "^replace github.com/gobuffalo/pop/v6 => ${POP_REPLACE}\$" "${MOD_DIR}/go.mod" ||
	die "${MOD_DIR}/go.mod does not replace github.com/gobuffalo/pop/v6 with ${POP_REPLACE}"

gotool_build "${MOD_DIR}" "-X github.com/ory/hydra/v2/driver/config.Version=${HYDRA_VERSION}" "${HYDRA_MODULE}"
