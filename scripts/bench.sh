#!/usr/bin/env bash
# scripts/bench.sh — `make bench`: the performance figures in one run.
#
# In a fresh temporary directory, on free 127.0.0.1 ports, with the load
# generator of the project (cmd/cibaload) on the same cores:
#   1. fills ~1k pending requests (cibaload fill; the proxy stopped) and
#      starts bin/cibaproxy from a Caddyfile whose site holds a plain
#      `respond "ok" 200` route (/respond) beside the ciba handler, limits
#      off, mail on to cibaload's SMTP sink;
#   2. durability: one backchannel request while the SMTP sink is down,
#      kill -9 right after its 200, sink up, restart: the poll must answer
#      authorization_pending and the mail must arrive;
#   3. load phases of one run: respond; the poll's request shape (POST,
#      Basic, form) answered by the respond route, which is what Caddy alone
#      makes of it; pending poll spread over the ~1k pending requests
#      (slow_down enforced); backchannel (mail on). Each phase but respond
#      alternates with the respond route in rounds, so its ratio compares
#      windows that shared the cores with the same neighbours. The proxy's
#      peak RSS (VmHWM) after each. Then the proxy restarts with mail off
#      and the backchannel runs again: the request path alone (the durable
#      write of the request, no outbox item, no delivery), which bounds what
#      the phase with mail can reach on these cores;
#   4. stops the proxy, fills to 1,000,000 pending (timed; the loader then
#      compacts the LSM tree, DB.Flatten, so the proxy starts on a settled
#      store rather than compacting the bulk load itself), restarts with
#      mail off (start-up: launch → first poll answer) and runs the pending
#      poll again, spread over the million;
#   5. the Go benchmarks of the hot paths (go test -bench ./cibaproxy/);
#   6. prints one table and writes everything to bin/bench.json.
# A CIBA phase's ratio to respond is the median of its rounds' ratios (each
# phase window over the respond window before it), the least beside it;
# every round's figures stay in bin/bench.json. Each load phase counts the
# flush requests the block device of the temporary directory completed in
# its windows (a machine-wide counter: other processes' flushes count too),
# which with the store's fsync mode (printed above the table) is what the
# durability of a backchannel request costs.
# Benchmarks print figures; nothing here fails on a missed target.
#
# With STORE=redis the proxy keeps its state in a redis-server started here
# on loopback (Debian's, which make tools installs; the append-only file
# fsynced as BENCH_REDIS_FSYNC says): the fills go to Redis, the durability
# check kills Redis with -9 as well as the proxy, each CIBA phase counts the
# commands Redis processed per answer (its round trips), and the table adds
# Redis's own memory. There is no warm-up of an in-memory index to wait for:
# a replica holds nothing per request.
#
# Environment (defaults in brackets):
#   STORE [badger]          badger or redis
#   BENCH_REDIS_FSYNC [always]  appendfsync of the Redis: always, everysec or
#                           no (always is what loses nothing on a crash)
#   BENCH_DURATION [10]     seconds measured per load phase (a CIBA phase
#                           measures this long, and its interleaved respond
#                           reference as long again)
#   BENCH_WARMUP [2]        seconds of warm-up before each phase
#   BENCH_CONNS [32]        keep-alive connections of the load generator
#   BENCH_USERS [1000]      users in users.json (backchannel round-robin)
#   BENCH_SMALL [1000]      pending requests of the first poll phase
#   BENCH_LARGE [1000000]   pending requests of the second (0: skip it)
#   BENCH_ROUNDS [5]        alternations of a CIBA phase with its reference
#                           (the table gives the median and least of them)
#   BENCH_FSYNC_NOTE        how the store syncs its writes, one line for the
#                           report [badger: the group commit; redis: its
#                           appendfsync]
#   BENCH_FLATTEN [1]       0: the proxy starts on the bulk load as written
#                           (and compacts it itself, which costs memory)
#   BENCH_DRAIN [15]        seconds to wait for the backchannel mails after
#                           the phase (the rest is dropped before the fill)
#   BENCH_GO [1]            0 skips the Go benchmarks
#   BENCH_BENCHTIME [1s]    go test -benchtime
#   BENCH_PROFILE [0]       1: CPU profiles of the load phases (Caddy's admin
#                           /debug/pprof) into bin/bench-<phase>.pprof
#   BENCH_KEEP [0]          1: keep the temporary directory
#   BENCH_OUT [bin/bench.json]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/bin"
CIBAPROXY="${BIN}/cibaproxy"
CIBALOAD="${BIN}/cibaload"
GO="${GO:-go}"

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONNS="${BENCH_CONNS:-32}"
USERS="${BENCH_USERS:-1000}"
SMALL="${BENCH_SMALL:-1000}"
LARGE="${BENCH_LARGE:-1000000}"
DRAIN="${BENCH_DRAIN:-15}"
ROUNDS="${BENCH_ROUNDS:-5}"
FLATTEN="${BENCH_FLATTEN:-1}"
RUN_GO="${BENCH_GO:-1}"
BENCHTIME="${BENCH_BENCHTIME:-1s}"
PROFILE="${BENCH_PROFILE:-0}"
OUT="${BENCH_OUT:-${BIN}/bench.json}"
STORE="${STORE:-badger}"
REDIS_FSYNC="${BENCH_REDIS_FSYNC:-always}"
SEED="bench-$$"
CLIENT=cc
export BENCH_CLIENT_SECRET="bench-secret-$$" # the Caddyfile reads it

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: ERROR: %s\n' "$*" >&2
	exit 1
}

for v in DURATION WARMUP CONNS USERS SMALL LARGE DRAIN ROUNDS; do
	[[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_${v} must be a whole number, not '${!v}'"
done
((DURATION > 0 && CONNS > 0 && USERS > 0 && SMALL > 0 && ROUNDS > 0)) || die "BENCH_DURATION, BENCH_CONNS, BENCH_USERS, BENCH_SMALL and BENCH_ROUNDS must be positive"
[[ "${STORE}" == badger || "${STORE}" == redis ]] || die "STORE must be badger or redis, not '${STORE}'"
[[ "${REDIS_FSYNC}" =~ ^(always|everysec|no)$ ]] || die "BENCH_REDIS_FSYNC must be always, everysec or no, not '${REDIS_FSYNC}'"
if [[ "${STORE}" == redis ]]; then
	for c in redis-server redis-cli; do
		command -v "${c}" >/dev/null 2>&1 || die "STORE=redis needs ${c}; run: make tools"
	done
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cibaproxy-bench.XXXXXX")"
RES="${WORK}/results"
mkdir -p "${RES}" "${WORK}/xdg-data" "${WORK}/xdg-config"
PIDS=()
NAMES=()
PROXY_PID=""
SINK_PID=""
HEAP_PID=""
REDIS_PID=""

# ---- cleanup: stop every process started here, by PID ---------------------

stop_pid() { # stop_pid PID NAME: SIGTERM, then SIGKILL after 10 s
	local pid="$1" name="$2" deadline=$((SECONDS + 10))
	kill -TERM "${pid}" 2>/dev/null || true
	while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.1
	done
	if kill -0 "${pid}" 2>/dev/null; then
		log "${name} (pid ${pid}) did not stop on SIGTERM; sending SIGKILL"
		kill -KILL "${pid}" 2>/dev/null || true
	fi
	wait "${pid}" 2>/dev/null || true
}

forget_pid() { # forget_pid PID: drop it from the list of processes to stop
	local i
	for i in "${!PIDS[@]}"; do
		if [[ "${PIDS[i]}" == "$1" ]]; then
			unset 'PIDS[i]' 'NAMES[i]'
		fi
	done
	PIDS=("${PIDS[@]}")
	NAMES=("${NAMES[@]}")
}

cleanup() {
	local status=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" "${NAMES[i]}"
	done
	if ((status != 0)); then
		for f in cibaproxy.log sink.log redis.log; do
			[[ -s "${WORK}/${f}" ]] || continue
			printf '\n----- %s (last 30 lines) -----\n' "${f}" >&2
			tail -n 30 "${WORK}/${f}" >&2
		done
		log "FAILED (exit ${status}); kept ${WORK}"
	elif [[ "${BENCH_KEEP:-0}" == 1 ]]; then
		log "kept ${WORK}"
	else
		rm -rf "${WORK}"
	fi
	exit "${status}"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# start NAME LOG CMD... runs CMD in the background (output appended to
# WORK/LOG) and records its PID in STARTED_PID.
start() {
	local name="$1" logf="$2"
	shift 2
	"$@" >>"${WORK}/${logf}" 2>&1 &
	STARTED_PID=$!
	PIDS+=("${STARTED_PID}")
	NAMES+=("${name}")
}

# ---- build -----------------------------------------------------------------

[[ -x "${CIBAPROXY}" ]] || {
	log "building bin/cibaproxy"
	(cd "${ROOT}" && "${GO}" build -o "${CIBAPROXY}" ./cmd/cibaproxy)
}
log "building bin/cibaload"
(cd "${ROOT}" && "${GO}" build -o "${CIBALOAD}" ./cmd/cibaload)

cat /proc/loadavg | cut -d' ' -f1-3 >"${RES}/loadavg-start.txt"
read -r PROXY_PORT ADMIN_PORT UPSTREAM_PORT SMTP_PORT SINK_HTTP_PORT REDIS_PORT < <("${CIBALOAD}" freeport -n 6)
BASE="http://127.0.0.1:${PROXY_PORT}"
TOKEN_URL="${BASE}/idp/token"
BC_URL="${BASE}/bc-authorize"
SINK_URL="http://127.0.0.1:${SINK_HTTP_PORT}/"
log "work directory ${WORK}; proxy ${PROXY_PORT}, admin ${ADMIN_PORT}, smtp ${SMTP_PORT}"

"${CIBALOAD}" users --count "${USERS}" --extra durable --out "${WORK}/users.json"
FLATTEN_NOTE=", then DB.Flatten"
[[ "${FLATTEN}" == 1 ]] || FLATTEN_NOTE=" (not flattened: the proxy compacts it)"
printf '%s\n' "${STORE}" >"${RES}/store.txt"
if [[ "${STORE}" == redis ]]; then
	FSYNC_DEFAULT="redis: appendonly yes, appendfsync ${REDIS_FSYNC}"
else
	FSYNC_DEFAULT="badger: every 200 after an fsync that began after its commit (group commit)"
fi
printf '%s\n' "${BENCH_FSYNC_NOTE:-${FSYNC_DEFAULT}}" >"${RES}/fsync.txt"
if [[ "${STORE}" == redis ]]; then
	REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
	STORAGE="redis ${REDIS_URL}"
	FILL_STORE=(--redis "${REDIS_URL}")
	printf '%s\n' "Redis $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-) on loopback: appendonly yes, appendfsync ${REDIS_FSYNC}, no RDB snapshots; the bulk loader writes through the store, as the proxy does" >"${RES}/badger-options.txt"
else
	STORAGE="badger ${WORK}/badger"
	FILL_STORE=(--dir "${WORK}/badger")
	printf '%s\n' "cibaproxy.BadgerOptions (group-committed fsync of every write, 2×16 MiB memtables, 32 MiB block cache, table indexes and bloom filters in memory, no compression); the bulk loader: the same without the per-write fsync, synced once at the end${FLATTEN_NOTE}" >"${RES}/badger-options.txt"
fi

# start_redis starts redis-server (again, on its directory: its append-only
# file is read back) and waits until it answers.
start_redis() {
	mkdir -p "${WORK}/redis"
	start redis-server redis.log redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --dir "${WORK}/redis" \
		--appendonly yes --appendfsync "${REDIS_FSYNC}" --save "" --protected-mode no
	REDIS_PID="${STARTED_PID}"
	local i
	for ((i = 0; i < 200; i++)); do
		[[ "$(redis-cli -p "${REDIS_PORT}" ping 2>/dev/null)" == PONG ]] && return 0
		sleep 0.05
	done
	die "redis-server did not answer on 127.0.0.1:${REDIS_PORT}"
}

# redis_info FIELD: a field of Redis's INFO (0 without Redis).
redis_info() {
	[[ -n "${REDIS_PID}" ]] || {
		echo 0
		return
	}
	# awk reads to the end: an early exit would kill the pipe (SIGPIPE).
	redis-cli -p "${REDIS_PORT}" info all | tr -d '\r' | awk -F: -v f="$1" '$1 == f { v = $2 } END { print v + 0 }'
}

# redis_phase NAME COMMANDS_BEFORE: writes RES/redis-NAME.json, the commands
# Redis processed during the phase and its memory after it.
redis_phase() {
	[[ -n "${REDIS_PID}" ]] || return 0
	printf '{"commands": %d, "used_memory": %d, "rss": %d}\n' $(($(redis_info total_commands_processed) - $2)) \
		"$(redis_info used_memory)" "$(redis_info used_memory_rss)" >"${RES}/redis-$1.json"
}

# caddyfile MAIL writes the Caddyfile, with the email block when MAIL is 1.
caddyfile() {
	local email=""
	if [[ "$1" == 1 ]]; then
		email="email {
			smtp 127.0.0.1:${SMTP_PORT}
			tls none
			from \"cibaproxy bench <login@bench.example>\"
		}"
	fi
	cat >"${WORK}/Caddyfile" <<EOF
{
	admin 127.0.0.1:${ADMIN_PORT}
	persist_config off
	auto_https off
	grace_period 2s
}

${BASE} {
	handle /respond {
		respond "ok" 200
	}
	ciba {
		upstream ${BASE}/idp
		upstream_via http://127.0.0.1:${UPSTREAM_PORT}
		public_url ${BASE}
		storage ${STORAGE}
		token_path /idp/token
		request_ttl 5m
		interval 5s
		users ${WORK}/users.json
		${email}
		limits {
			client_rate 0
			ip_rate 0
			auth_failures 0
			user_pending 0
			user_mail 0
		}
		client ${CLIENT} {
			secret {env.BENCH_CLIENT_SECRET}
			mode poll
			scopes openid profile email
		}
	}
	reverse_proxy 127.0.0.1:${UPSTREAM_PORT}
}
EOF
}

# start_proxy OUTFILE [POLL_ID] [PENDING]: starts bin/cibaproxy and writes
# the start-up time (launch → first answer to a poll of POLL_ID, or to GET
# /respond) to RES/OUTFILE.
start_proxy() {
	local out="$1" id="${2:-}" pending="${3:-0}" t0
	t0=$(date +%s%N)
	start cibaproxy cibaproxy.log env XDG_DATA_HOME="${WORK}/xdg-data" XDG_CONFIG_HOME="${WORK}/xdg-config" \
		"${CIBAPROXY}" run --config "${WORK}/Caddyfile" --adapter caddyfile
	PROXY_PID="${STARTED_PID}"
	if [[ -n "${id}" ]]; then
		"${CIBALOAD}" wait-http --url "${TOKEN_URL}" --poll-id "${id}" --client "${CLIENT}" --secret "${BENCH_CLIENT_SECRET}" \
			--since-ns "${t0}" --pending "${pending}" --timeout 120s --out "${RES}/${out}"
	else
		"${CIBALOAD}" wait-http --url "${BASE}/respond" --expect 200 --since-ns "${t0}" --timeout 120s --out "${RES}/${out}"
	fi
	kill -0 "${PROXY_PID}" 2>/dev/null || die "cibaproxy exited at start"
}

stop_proxy() {
	stop_pid "${PROXY_PID}" cibaproxy
	forget_pid "${PROXY_PID}"
	PROXY_PID=""
}

# phase NAME ARGS...: one load phase (cibaload run), its CPU profile when
# BENCH_PROFILE=1.
phase() {
	local name="$1" prof=""
	shift
	log "phase ${name}: ${DURATION} s (+${WARMUP} s warm-up), ${CONNS} connections"
	if [[ "${PROFILE}" == 1 ]]; then
		(sleep "${WARMUP}" && exec "${CIBALOAD}" fetch --out "${BIN}/bench-${name}.pprof" \
			--url "http://127.0.0.1:${ADMIN_PORT}/debug/pprof/profile?seconds=$((DURATION > 2 ? DURATION - 1 : 1))") &
		prof=$!
		PIDS+=("${prof}")
		NAMES+=("profile fetch")
	fi
	local before
	before="$(redis_info total_commands_processed)"
	"${CIBALOAD}" run --name "${name}" --conns "${CONNS}" --duration "${DURATION}s" --warmup "${WARMUP}s" \
		--client "${CLIENT}" --secret "${BENCH_CLIENT_SECRET}" --pid "${PROXY_PID}" --flush-dir "${WORK}" \
		--helper-pid "$(tr ' ' , <<<"${SINK_PID} ${REDIS_PID}" | sed 's/^,//; s/,$//')" \
		--out "${RES}/${name}.json" "$@"
	redis_phase "${name}" "${before}"
	if [[ -n "${prof}" ]]; then
		wait "${prof}" || log "no profile of ${name}"
		forget_pid "${prof}"
	fi
}

# ---- 1. ~1k pending, start ------------------------------------------------

[[ "${STORE}" == redis ]] && start_redis
log "filling ${SMALL} pending requests"
"${CIBALOAD}" fill "${FILL_STORE[@]}" --users "${WORK}/users.json" --client "${CLIENT}" --seed "${SEED}" \
	--start 0 --count "${SMALL}" --lifetime 1h --out "${RES}/fill-1k.json"
FIRST_ID="$("${CIBALOAD}" ids --seed "${SEED}" --start 0 --count 1)"
caddyfile 1
start_proxy startup-1k.json "${FIRST_ID}" "${SMALL}"

# ---- 2. durability: kill -9 right after the 200 ------------------------------

log "durability: backchannel request with the SMTP server down, then kill -9"
DUR_ID="$("${CIBALOAD}" bc-once --url "${BC_URL}" --client "${CLIENT}" --secret "${BENCH_CLIENT_SECRET}" --login-hint durable)"
kill -KILL "${PROXY_PID}" ${REDIS_PID}
for pid in "${PROXY_PID}" ${REDIS_PID}; do
	wait "${pid}" 2>/dev/null || true
	forget_pid "${pid}"
done
[[ "${STORE}" == redis ]] && start_redis
start smtp-sink sink.log "${CIBALOAD}" smtp-sink --listen "127.0.0.1:${SMTP_PORT}" --http "127.0.0.1:${SINK_HTTP_PORT}"
SINK_PID="${STARTED_PID}"
start_proxy durability-startup.json "${FIRST_ID}"
"${CIBALOAD}" poll-once --url "${TOKEN_URL}" --client "${CLIENT}" --secret "${BENCH_CLIENT_SECRET}" --id "${DUR_ID}" >"${RES}/durability-poll.txt"
"${CIBALOAD}" sink-wait --url "${SINK_URL}" --rcpt durable@bench.example --min 1 --timeout 30s --out "${RES}/durability-mail.json"
log "durability: poll after restart → $(cat "${RES}/durability-poll.txt")"

# ---- 3. the phases of one run ------------------------------------------------

# Each CIBA phase alternates with the respond route (--ref-url, ${ROUNDS}
# rounds), so its ratio compares windows that met the same neighbours on
# the shared cores; the respond phase alone is the anchor.
phase respond --phase respond --url "${BASE}/respond"
phase poll-shape --phase post --url "${BASE}/respond" --ref-url "${BASE}/respond" --rounds "${ROUNDS}" \
	--seed "${SEED}" --ids-start 0 --ids-count "${SMALL}"
phase poll-1k --phase poll --url "${TOKEN_URL}" --ref-url "${BASE}/respond" --rounds "${ROUNDS}" \
	--seed "${SEED}" --ids-start 0 --ids-count "${SMALL}"
"${CIBALOAD}" sink-wait --url "${SINK_URL}" --min 0 --timeout 1s --out "${RES}/mails-before.json"
MAILS_BEFORE="$("${CIBALOAD}" get "${RES}/mails-before.json" mails)"
BC_LOAD=(--phase backchannel --url "${BC_URL}" --ref-url "${BASE}/respond" --rounds "${ROUNDS}"
	--users "${USERS}" --hint-format 'u%05d')
phase backchannel "${BC_LOAD[@]}"
"${CIBALOAD}" sink-wait --url "${SINK_URL}" --min 0 --timeout 1s --out "${RES}/backchannel-mail-phase.json"
CREATED="$("${CIBALOAD}" get "${RES}/backchannel.json" valid_incl_warmup)"
log "waiting up to ${DRAIN} s for the ${CREATED} backchannel mails"
"${CIBALOAD}" sink-wait --url "${SINK_URL}" --min $((MAILS_BEFORE + CREATED)) --timeout "${DRAIN}s" --out "${RES}/backchannel-mail.json"
stop_proxy
# The backchannel request without its mail: a site with no authenticator
# configured answers 200 and stores the request, but queues nothing.
caddyfile 0
start_proxy startup-nomail.json
phase backchannel-nomail "${BC_LOAD[@]}"
stop_proxy

# ---- 4. a million pending ----------------------------------------------------

if ((LARGE > SMALL)); then
	log "filling to ${LARGE} pending requests (undelivered bench mails dropped)"
	"${CIBALOAD}" fill "${FILL_STORE[@]}" --users "${WORK}/users.json" --client "${CLIENT}" --seed "${SEED}" \
		--start "${SMALL}" --target-pending "${LARGE}" --lifetime 1h --workers 16 --drop-outbox \
		--flatten="$([[ "${FLATTEN}" == 1 ]] && echo true || echo false)" --out "${RES}/fill-1m.json"
	FILLED="$("${CIBALOAD}" get "${RES}/fill-1m.json" created)"
	PENDING="$("${CIBALOAD}" get "${RES}/fill-1m.json" pending_after)"
	caddyfile 0
	WARM_SEEN=$(grep -c '"pending requests held in memory"' "${WORK}/cibaproxy.log" || true)
	LAUNCH_NS=$(date +%s%N)
	start_proxy startup-1m.json "${FIRST_ID}" "${PENDING}"
	# Badger reads the pending requests into memory in the background after
	# start (polls of those not read yet read Badger meanwhile); the poll
	# phase measures the steady state after it, and the time it took is
	# reported. Redis has nothing to read.
	if [[ "${STORE}" == badger ]]; then
		WARM_DEADLINE=$((SECONDS + 120))
		warmed() { (($(grep -c '"pending requests held in memory"' "${WORK}/cibaproxy.log" || true) > WARM_SEEN)); }
		until warmed; do
			((SECONDS < WARM_DEADLINE)) || break
			sleep 0.1
		done
		if warmed; then
			WARM_S=$(awk -v t0="${LAUNCH_NS}" -v t1="$(date +%s%N)" 'BEGIN { printf "%.2f", (t1 - t0) / 1e9 }')
			printf '{"seconds": %s}\n' "${WARM_S}" >"${RES}/warm-1m.json"
			log "pending requests held in memory ${WARM_S} s after the launch"
		else
			log "the pending requests were not all read into memory within 120 s; measuring anyway"
		fi
	fi
	if [[ "${PROFILE}" == 1 ]]; then
		# The heap a few seconds into the 1M phase, where its peak RSS was
		# seen to build up.
		(sleep 6 && exec "${CIBALOAD}" fetch --out "${BIN}/bench-poll-1m-heap.pprof" \
			--url "http://127.0.0.1:${ADMIN_PORT}/debug/pprof/heap") &
		HEAP_PID=$!
		PIDS+=("${HEAP_PID}")
		NAMES+=("heap profile fetch")
	fi
	phase poll-1m --phase poll --url "${TOKEN_URL}" --ref-url "${BASE}/respond" --rounds "${ROUNDS}" \
		--seed "${SEED}" --ids-start 0 --ids-count $((SMALL + FILLED))
	if [[ -n "${HEAP_PID}" ]]; then
		wait "${HEAP_PID}" || log "no heap profile"
		forget_pid "${HEAP_PID}"
	fi
	stop_proxy
fi

# ---- 5. Go benchmarks ----------------------------------------------------------

if [[ "${RUN_GO}" == 1 ]]; then
	log "Go benchmarks (-benchtime ${BENCHTIME})"
	(cd "${ROOT}" && "${GO}" test -run '^$' -bench . -benchtime "${BENCHTIME}" ./cibaproxy/) | tee "${RES}/gobench.txt" >&2
fi

# ---- 6. the table ----------------------------------------------------------------

"${CIBALOAD}" report --dir "${RES}" --out "${OUT}"
log "wrote ${OUT}"
