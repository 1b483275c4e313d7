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
NAME=dex
BIN="${ROOT}/bin/dex"
STAMP="${ROOT}/bin/.dex-version"
# shellcheck source=lib/gotool.sh
source "${ROOT}/scripts/lib/gotool.sh"

gotool_skip_if_current DEX_FORCE

# The wrapper module must pin the same version as this script.
if ! grep -q "^require ${DEX_MODULE} ${DEX_PSEUDO}\$" "${MOD_DIR}/go.mod"; then
	die "${MOD_DIR}/go.mod does not require ${DEX_MODULE} ${DEX_PSEUDO}; update the script and go.mod together"
fi

# Built without cgo: no C compiler needed, and the sqlite3 driver (the one
# cgo package) is left out, which saves a minute of a cold build. Dex's
# memory storage is what the tests and the demo use; sqlite3 storage is not
# available in this build.
gotool_build "${MOD_DIR}" "-X main.version=${DEX_RELEASE}" "${DEX_MODULE}/cmd/dex"
