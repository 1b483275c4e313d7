# scripts/lib/gotool.sh — sourced by the scripts that build a pinned Go
# program into bin/ from a module of its own under scripts/ (install-dex.sh,
# install-hydra.sh). The sourcing script sets NAME (for the log), BIN (the
# program), STAMP (the file that records what BIN was built from) and
# STAMP_TEXT (that record), and calls gotool_skip_if_current, then
# gotool_build.

log() { printf 'install-%s: %s\n' "${NAME}" "$*" >&2; }
die() {
	printf 'install-%s: ERROR: %s\n' "${NAME}" "$*" >&2
	exit 1
}

# gotool_skip_if_current exits 0 when BIN exists and STAMP holds
# STAMP_TEXT, unless the variable named $1 (e.g. DEX_FORCE) is 1.
gotool_skip_if_current() {
	local force="${!1:-0}"
	if [[ "${force}" != 1 && -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${STAMP_TEXT}" ]]; then
		log "up to date: ${BIN} (${STAMP_TEXT}); set $1=1 to rebuild"
		exit 0
	fi
	command -v go >/dev/null 2>&1 || die "go is not on PATH; install the Go toolchain named in go.mod"
}

# gotool_build MOD_DIR LDFLAGS PACKAGE builds PACKAGE in the module MOD_DIR
# without cgo into BIN (through a temporary file, so a failed build leaves
# the old one), then writes STAMP. GOFLAGS from the environment is passed
# through (-mod=mod lets go repair a go.sum that misses entries) but for
# -mod=vendor (the module has no vendor directory); without a -mod flag the
# build is -mod=readonly: go.mod and go.sum are used as committed. A go.work
# at the repository's root never takes over (GOWORK=off).
gotool_build() {
	local mod_dir="$1" ldflags="$2" pkg="$3" f tmp start
	[[ -f "${mod_dir}/go.mod" && -f "${mod_dir}/go.sum" ]] || die "missing ${mod_dir}/go.mod or go.sum"
	local goflags=()
	for f in ${GOFLAGS:-}; do
		[[ "${f}" == -mod=vendor ]] && {
			log "ignoring GOFLAGS ${f}"
			continue
		}
		goflags+=("${f}")
	done
	export GOFLAGS="${goflags[*]:-}" GOWORK=off CGO_ENABLED=0
	mkdir -p "$(dirname "${BIN}")"
	tmp="$(mktemp "$(dirname "${BIN}")/.${NAME}.XXXXXX")"
	trap 'rm -f "${tmp}"' EXIT
	log "building ${pkg} -> ${BIN}"
	log "  in ${mod_dir}: go build -buildvcs=false -ldflags '${ldflags}' (GOFLAGS='${GOFLAGS}', $(go env GOVERSION)); a cold build takes minutes, later ones use the Go build cache"
	start=${SECONDS}
	(cd "${mod_dir}" && go build -buildvcs=false -ldflags "${ldflags}" -o "${tmp}" "${pkg}")
	chmod 0755 "${tmp}"
	mv -f "${tmp}" "${BIN}"
	trap - EXIT
	printf '%s\n' "${STAMP_TEXT}" >"${STAMP}"
	log "built ${BIN} in $((SECONDS - start))s: $("${BIN}" version 2>&1 | grep -m1 -i version || true)"
}
