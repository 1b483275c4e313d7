#!/usr/bin/env bash
# scripts/demo.sh — `make demo`: a whole CIBA login on loopback.
#
# Starts, in a fresh temporary directory and on free 127.0.0.1 ports:
#   cibaproxy (bin/cibaproxy)  the ciba handler in front of Dex, from a Caddyfile
#                              shaped like Caddyfile.example
#   Dex       (bin/dex)        the upstream OpenID provider (scripts/dex/dex.yaml.tmpl),
#                              issuer on cibaproxy's origin: http://127.0.0.1:<proxy>/dex
#   MailDev   (scripts/maildev)  catches the approval mail and shows it on a web page
# or, with UPSTREAM=hydra, instead of Dex:
#   PostgreSQL (Debian's, /usr/lib/postgresql/15/bin)  a private cluster for Hydra
#   Hydra     (bin/hydra)      Ory Hydra v2.3.0, issuer cibaproxy's origin itself,
#                              urls.login and urls.consent on cibaproxy (mint hydra)
# then runs `cibaproxy ciba login ... --claims` as the consumption device and
# waits for it. Without AUTO=1 it tells you where to click (MailDev's page,
# the mail's link, Approve). With AUTO=1 it approves by itself through
# MailDev's API and the approval page, like a person would, and checks that
# the CLI printed tokens whose ID token verified with aud = the client and the
# user's e-mail.
#
# Needs what `make tools build` installs: bin/cibaproxy, bin/dex, MailDev
# (and so node). Every process it starts is stopped by PID when it exits,
# fails, or is interrupted (Ctrl-C).
#
# Environment:
#   AUTO=1               approve automatically and exit 0 when the tokens verify
#   LOGIN_HINT=alice     the user: alice (has a name) or bob (has none)
#   DEMO_PROXY_PORT, DEMO_DEX_PORT, DEMO_SMTP_PORT, DEMO_WEB_PORT
#                        fixed ports instead of free ones picked at random;
#                        the demo stops at once if one is taken
#   REPLICAS=3           run that many cibaproxy replicas on one Redis (Debian's
#                        redis-server, which make tools installs; append-only
#                        file fsynced at every write) behind a round-robin Caddy
#                        balancer on the proxy port; the demo then shows which
#                        replica answered what. 1 (the default): one process on
#                        Badger
#   UPSTREAM=hydra       Ory Hydra on PostgreSQL instead of Dex: cibaproxy mints
#                        by Hydra's own authorization-code flow (mint hydra)
#                        rather than by token exchange; one process only
#   DEMO_KEEP=1          keep the temporary directory (configs, logs, store)
#   DEMO_TIMEOUT=90      AUTO mode: seconds to wait for the mail and the tokens
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CIBAPROXY="${ROOT}/bin/cibaproxy"
DEX="${ROOT}/bin/dex"
HYDRA="${ROOT}/bin/hydra"
PGBIN=/usr/lib/postgresql/15/bin
MAILDEV="${ROOT}/scripts/maildev/node_modules/.bin/maildev"
DEX_TEMPLATE="${ROOT}/scripts/dex/dex.yaml.tmpl"

AUTO="${AUTO:-}"
[[ "${AUTO}" == 0 ]] && AUTO=""
LOGIN_HINT="${LOGIN_HINT:-alice}"
DEMO_TIMEOUT="${DEMO_TIMEOUT:-90}"
REPLICAS="${REPLICAS:-1}"
UPSTREAM="${UPSTREAM:-dex}"
CLIENT_ID=cc
CLIENT_SECRET=cc-secret # demo only; the same in Dex's staticClients (or registered at Hydra)
BINDING_MESSAGE="Demo $((RANDOM % 9000 + 1000))"

log() { printf 'demo: %s\n' "$*" >&2; }
die() {
	printf 'demo: ERROR: %s\n' "$*" >&2
	exit 1
}

# ---- prerequisites -------------------------------------------------------

missing=()
[[ -x "${CIBAPROXY}" ]] || missing+=("${CIBAPROXY} (make build)")
case "${UPSTREAM}" in
dex) [[ -x "${DEX}" ]] || missing+=("${DEX} (make dex)") ;;
hydra)
	[[ -x "${HYDRA}" ]] || missing+=("${HYDRA} (make hydra)")
	[[ -x "${PGBIN}/initdb" ]] || missing+=("${PGBIN}/initdb (make postgres)")
	;;
*) die "UPSTREAM must be dex or hydra, not ${UPSTREAM}" ;;
esac
[[ -x "${MAILDEV}" ]] || missing+=("${MAILDEV} (make maildev)")
command -v node >/dev/null 2>&1 || missing+=("node (make maildev installs it)")
((${#missing[@]} == 0)) || die "missing: ${missing[*]}; run: make tools build"
[[ "${LOGIN_HINT}" == alice || "${LOGIN_HINT}" == bob ]] || die "LOGIN_HINT must be alice or bob, not ${LOGIN_HINT}"
[[ "${REPLICAS}" =~ ^[1-9]$ ]] || die "REPLICAS must be a number from 1 to 9, not ${REPLICAS}"
[[ "${UPSTREAM}" == dex || "${REPLICAS}" == 1 ]] || die "UPSTREAM=${UPSTREAM} runs one process only (REPLICAS=1)"
if ((REPLICAS > 1)); then
	for c in redis-server redis-cli; do
		command -v "${c}" >/dev/null 2>&1 || die "REPLICAS=${REPLICAS} needs ${c}; run: make tools"
	done
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cibaproxy-demo.XXXXXX")"
PIDS=()
NAMES=()
STARTED=""
QUIET_FAILURE="" # set when the failure was already shown and needs no logs
LOGS=(cibaproxy.log dex.log hydra.log postgres.log maildev.log login.err login.out)
for ((i = 1; i <= REPLICAS && REPLICAS > 1; i++)); do LOGS+=("replica${i}.log"); done
((REPLICAS > 1)) && LOGS+=(redis.log)

# ---- cleanup: stop every process started here, by PID ---------------------

stop_all() {
	local i pid deadline
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null || true
	done
	deadline=$((SECONDS + 10))
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid="${PIDS[i]}"
		while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if kill -0 "${pid}" 2>/dev/null; then
			log "${NAMES[i]} (pid ${pid}) did not stop on SIGTERM; sending SIGKILL"
			kill -KILL "${pid}" 2>/dev/null || true
		fi
		wait "${pid}" 2>/dev/null || true
	done
	PIDS=()
	NAMES=()
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	stop_all
	if [[ -z "${STARTED}" ]]; then
		rm -rf "${WORK}" # nothing ran: nothing to look at
	elif [[ -z "${QUIET_FAILURE}" ]] && ((status != 0 && status != 130 && status != 143)); then
		for f in "${LOGS[@]}"; do
			[[ -s "${WORK}/${f}" ]] || continue
			printf '\n----- %s (last 40 lines) -----\n' "${f}" >&2
			tail -n 40 "${WORK}/${f}" >&2
		done
		printf '\n' >&2
		log "FAILED (exit ${status}); configs and logs kept in ${WORK}"
	elif [[ "${DEMO_KEEP:-}" == 1 ]]; then
		log "kept ${WORK}"
	else
		rm -rf "${WORK}"
	fi
	exit "${status}"
}
trap cleanup EXIT
trap 'printf "\n" >&2; log "interrupted; stopping everything"; exit 130' INT
trap 'log "terminated; stopping everything"; exit 143' TERM

# start NAME OUT ERR CMD... runs CMD in WORK in the background, its stdout
# to WORK/OUT and its stderr to WORK/ERR (the same file when equal), and
# records its PID.
start() {
	local name="$1" out="$2" err="$3"
	shift 3
	if [[ "${out}" == "${err}" ]]; then
		(cd "${WORK}" && exec "$@") >"${WORK}/${out}" 2>&1 &
	else
		(cd "${WORK}" && exec "$@") >"${WORK}/${out}" 2>"${WORK}/${err}" &
	fi
	PIDS+=("$!")
	NAMES+=("${name}")
	STARTED=1
}

# ---- helper (node: installed with MailDev; no curl or jq needed) -----------

HELPER="${WORK}/helper.mjs"
cat >"${HELPER}" <<'JS'
// The demo's HTTP and JSON chores. Usage: node helper.mjs <command> ...
import net from 'node:net';
import fs from 'node:fs';

const [cmd, ...args] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fail = (msg) => { console.error(msg); process.exit(1); };

// A port is free if it can be listened on at 127.0.0.1.
function listen(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(null));
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

// Cookies of a response, as a Cookie header value.
const cookies = (res) => res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');

async function approve(web, address, binding, timeout) {
  const until = Date.now() + timeout * 1000;
  let mail;
  while (!mail) {
    if (Date.now() > until) fail(`no mail to ${address} arrived at MailDev within ${timeout}s`);
    try {
      const res = await fetch(`${web}/api/email`);
      if (res.ok) {
        const mails = await res.json();
        mail = mails.reverse().find((m) => (m.envelope?.to ?? []).some((t) => t.address?.toLowerCase() === address));
      }
    } catch { /* not up yet */ }
    if (!mail) await sleep(250);
  }
  console.error(`demo: mail "${mail.subject}" to ${address} arrived`);
  // The approval URL is the first URL of the text part (the approval page contract).
  const link = (mail.text ?? '').match(/https?:\/\/[^\s<>"']+/)?.[0];
  if (!link) fail(`the mail's text part has no URL:\n${mail.text}`);
  console.error(`demo: GET ${link}`);
  const page = await fetch(link);
  const html = await page.text();
  if (page.status !== 200) fail(`GET ${link} answered ${page.status}:\n${html}`);
  if (binding && !html.includes(binding)) fail(`the approval page does not show the binding message "${binding}"`);
  const form = html.match(/<form[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i);
  if (!form) fail(`no <form method="post"> on the approval page:\n${html}`);
  const action = form[0].match(/action="([^"]*)"/)?.[1];
  const body = new URLSearchParams();
  for (const input of form[1].matchAll(/<input\b[^>]*>/gi)) {
    const attr = (n) => input[0].match(new RegExp(`\\b${n}="([^"]*)"`))?.[1];
    if (attr('type') === 'hidden') body.append(attr('name'), attr('value') ?? '');
    // match_binding_message: pick the code the device shows.
    if (attr('type') === 'radio' && attr('value') === binding) body.append(attr('name'), binding);
  }
  body.append('decision', 'approve');
  const target = new URL(action || link, link).toString();
  console.error(`demo: POST ${target} decision=approve (with the csrf value and cookie)`);
  const res = await fetch(target, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookies(page) },
    body: body.toString(),
    redirect: 'follow',
  });
  const result = await res.text();
  const outcome = result.match(/data-outcome="([^"]*)"/)?.[1];
  if (res.status !== 200 || outcome !== 'approved') fail(`approving answered ${res.status} (outcome ${outcome}):\n${result}`);
  console.error('demo: approved');
}

// check OUT ISSUER CLIENT EMAIL: the CLI's --claims output must hold tokens
// and the claims of a verified ID token for this client and user.
function check(out, issuer, client, email, name) {
  let doc;
  try { doc = JSON.parse(fs.readFileSync(out, 'utf8')); } catch (e) { fail(`the CLI's output is not JSON: ${e.message}`); }
  const t = doc.tokens ?? {}, c = doc.id_token_claims ?? {};
  const aud = [].concat(c.aud ?? []);
  const problems = [];
  if (!t.access_token) problems.push('no access_token');
  if (!t.id_token) problems.push('no id_token');
  if (c.iss !== issuer) problems.push(`iss ${c.iss}, want ${issuer}`);
  if (!aud.includes(client)) problems.push(`aud ${JSON.stringify(c.aud)} lacks ${client}`);
  if (c.email !== email) problems.push(`email ${c.email}, want ${email}`);
  if (name && c.name !== name) problems.push(`name ${c.name}, want ${name}`);
  if (!(c.exp * 1000 > Date.now())) problems.push('the ID token has expired');
  if (problems.length) fail(`the tokens do not check out: ${problems.join('; ')}`);
  const life = t.expires_in ? `, expires in ${t.expires_in}s` : '';
  console.log(`  access token: ${t.token_type} ${t.access_token.length} chars${life}`);
  console.log(`  ID token (verified against the issuer's keys): iss ${c.iss}`);
  console.log(`    aud ${aud.join(' ')}, sub ${c.sub}`);
  console.log(`    email ${c.email} (verified: ${c.email_verified}), name ${c.name ?? '-'}`);
}

switch (cmd) {
  case 'ports': { // ports N: N distinct free ports
    const servers = [];
    for (let i = 0; i < Number(args[0]); i++) servers.push(await listen(0));
    console.log(servers.map((s) => s.address().port).join(' '));
    servers.forEach((s) => s.close());
    break;
  }
  case 'free': { // free PORT: exit 0 if free
    const s = await listen(Number(args[0]));
    if (!s) process.exit(1);
    s.close();
    break;
  }
  case 'wait': { // wait URL SECONDS PID [JSON-KEY]: until URL answers 200 (with KEY)
    const [url, secs, pid, key] = args;
    const until = Date.now() + Number(secs) * 1000;
    for (;;) {
      if (!alive(Number(pid))) fail(`the process (pid ${pid}) exited`);
      try {
        const res = await fetch(url);
        if (res.status === 200) {
          const body = await res.text();
          if (!key || key in JSON.parse(body)) break;
        }
      } catch { /* not up yet */ }
      if (Date.now() > until) fail(`${url} did not answer 200 within ${secs}s`);
      await sleep(100);
    }
    break;
  }
  case 'post': { // post URL JSON: POST a JSON body, exit 0 on 2xx
    const res = await fetch(args[0], { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: args[1] });
    if (res.status < 200 || res.status > 299) fail(`POST ${args[0]} answered ${res.status}: ${await res.text()}`);
    break;
  }
  case 'approve':
    await approve(args[0], args[1].toLowerCase(), args[2], Number(args[3]));
    break;
  case 'check':
    check(...args);
    break;
  default:
    fail(`unknown command ${cmd}`);
}
JS
helper() { node "${HELPER}" "$@"; }

# not_up NAME LOG PORT: the reason NAME did not come up, for die.
not_up() {
	if grep -qE 'address already in use|EADDRINUSE' "${WORK}/$2" 2>/dev/null; then
		echo "$1 could not listen: port $3 on 127.0.0.1 was taken meanwhile by another process; run the demo again"
	else
		echo "$1 did not come up (see $2)"
	fi
}

# ---- ports -----------------------------------------------------------------

read -r p1 p2 p3 p4 < <(helper ports 4) || die "could not find free ports on 127.0.0.1"
PROXY_PORT="${DEMO_PROXY_PORT:-${p1}}"
DEX_PORT="${DEMO_DEX_PORT:-${p2}}"
SMTP_PORT="${DEMO_SMTP_PORT:-${p3}}"
WEB_PORT="${DEMO_WEB_PORT:-${p4}}"
declare -A seen=()
for v in PROXY_PORT DEX_PORT SMTP_PORT WEB_PORT; do
	port="${!v}"
	if ! [[ "${port}" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
		die "DEMO_${v}=${port} is not a port number"
	fi
	[[ -z "${seen[${port}]:-}" ]] || die "port ${port} is given twice (DEMO_${v} and DEMO_${seen[${port}]})"
	seen[${port}]="${v}"
	helper free "${port}" || die "port ${port} on 127.0.0.1 is taken (wanted for ${v}); free it, or set DEMO_${v} to another port"
done
# With Hydra: its admin port and PostgreSQL's.
if [[ "${UPSTREAM}" == hydra ]]; then
	read -r PG_PORT HYDRA_ADMIN_PORT < <(helper ports 2) || die "could not find free ports on 127.0.0.1"
fi
# With replicas: one port each, and Redis's.
REPLICA_PORTS=()
if ((REPLICAS > 1)); then
	read -r -a more < <(helper ports $((REPLICAS + 1))) || die "could not find free ports on 127.0.0.1"
	REDIS_PORT="${more[0]}"
	REPLICA_PORTS=("${more[@]:1}")
fi

PUBLIC="http://127.0.0.1:${PROXY_PORT}"
ISSUER="${PUBLIC}/dex" # Dex's issuer, on cibaproxy's origin
UPSTREAM_NAME=Dex
# With UPSTREAM=hydra, DEX_PORT is Hydra's public port: cibaproxy's
# upstream_via and reverse_proxy target.
MINT=$'\t\texchange {\n\t\t\tcredentials client\n\t\t\tsubject_token_type id_token\n\t\t\tparam connector_id ciba\n\t\t}'
if [[ "${UPSTREAM}" == hydra ]]; then
	ISSUER="${PUBLIC}" # Hydra's issuer is cibaproxy's origin itself
	UPSTREAM_NAME=Hydra
	MINT=$'\t\tmint hydra {\n\t\t\tadmin http://127.0.0.1:'"${HYDRA_ADMIN_PORT}"$'\n\t\t\tredirect_uri '"${PUBLIC}"$'/ciba/hydra/callback\n\t\t}'
fi
WEB="http://127.0.0.1:${WEB_PORT}"
case "${LOGIN_HINT}" in
alice) USER_EMAIL=alice@example.com USER_NAME="Alice Example" ;;
bob) USER_EMAIL=bob@example.com USER_NAME=bob ;; # no name: cibaproxy sends the username
esac

# ---- configuration ---------------------------------------------------------

mkdir -p "${WORK}/badger" "${WORK}/dex" "${WORK}/xdg/config" "${WORK}/xdg/data"

cat >"${WORK}/users.json" <<'EOF'
{"users":[
  {"username":"alice","email":"alice@example.com","name":"Alice Example"},
  {"username":"bob","email":"bob@example.com"}
]}
EOF

# ciba_site ADDRESS STORAGE [DIRECTIVES]: a site of the shape of
# Caddyfile.example, on loopback: plain HTTP, MailDev without TLS, Dex
# behind reverse_proxy.
ciba_site() {
	cat <<EOF
$1 {
${3:-}
	ciba {
		upstream ${ISSUER}
		upstream_via http://127.0.0.1:${DEX_PORT}
		public_url ${PUBLIC}
		storage $2
		request_ttl 5m
		interval 1s
		users ${WORK}/users.json
		email {
			smtp 127.0.0.1:${SMTP_PORT}
			tls none
			from "cibaproxy demo <login@example.com>"
			subject "Confirm your sign-in (cibaproxy demo)"
		}
${MINT}
		client ${CLIENT_ID} {
			name "Demo Call Centre"
			secret {env.CIBA_DEMO_CLIENT_SECRET}
			mode poll
			scopes openid profile email
		}
	}
	reverse_proxy 127.0.0.1:${DEX_PORT}
}
EOF
}

# No admin endpoint (nothing to collide with).
GLOBAL=$'{\n\tadmin off\n}\n'
if ((REPLICAS == 1)); then
	{
		echo "${GLOBAL}"
		ciba_site "${PUBLIC}" "badger ${WORK}/badger"
	} >"${WORK}/Caddyfile"
else
	# Each replica on a port of its own, on one Redis, naming itself in an
	# X-Replica header and logging what it serves; the balancer, a plain
	# Caddy, on the public origin.
	upstreams=()
	for ((i = 1; i <= REPLICAS; i++)); do
		port="${REPLICA_PORTS[i - 1]}"
		upstreams+=("127.0.0.1:${port}")
		mkdir -p "${WORK}/xdg${i}/config" "${WORK}/xdg${i}/data"
		{
			echo "${GLOBAL}"
			ciba_site "http://127.0.0.1:${port}" "redis redis://127.0.0.1:${REDIS_PORT}/0" $'\theader X-Replica r'"${i}"$'\n\tlog'
		} >"${WORK}/Caddyfile.r${i}"
	done
	cat >"${WORK}/Caddyfile" <<EOF
${GLOBAL}
${PUBLIC} {
	reverse_proxy ${upstreams[*]} {
		lb_policy round_robin
		lb_try_duration 5s
	}
}
EOF
fi

# Dex's config from the template, rendered in bash (no envsubst needed);
# with UPSTREAM=hydra too, unused.
export DEX_ISSUER="${ISSUER}" DEX_PORT
export DEX_CLIENT_ID="${CLIENT_ID}" DEX_CLIENT_SECRET="${CLIENT_SECRET}" CIBA_ISSUER="${PUBLIC}/ciba"
dex_yaml="$(<"${DEX_TEMPLATE}")"
for v in DEX_ISSUER DEX_PORT DEX_CLIENT_ID DEX_CLIENT_SECRET CIBA_ISSUER; do
	dex_yaml="${dex_yaml//"\${${v}}"/${!v}}"
done
# shellcheck disable=SC2016 # a literal ${ is looked for
[[ "${dex_yaml}" != *'${'* ]] || die "${DEX_TEMPLATE} has a placeholder this script does not fill: $(grep -o '\${[A-Z_]*}' <<<"${dex_yaml}" | sort -u | tr '\n' ' ')"
printf '%s\n' "${dex_yaml}" >"${WORK}/dex.yaml"

# start_hydra starts a private PostgreSQL cluster (as the postgres user when
# root: the server refuses root), migrates Hydra's database, starts Hydra and
# registers the CIBA client through its admin API.
start_hydra() {
	local as=() pgdata="${WORK}/pgdata" i
	if [[ "$(id -u)" == 0 ]]; then
		chown postgres: "${WORK}"
		as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
	fi
	"${as[@]}" "${PGBIN}/initdb" -D "${pgdata}" -U postgres --auth=trust -E UTF8 --no-sync >"${WORK}/postgres.log" 2>&1 ||
		die "initdb failed (see postgres.log)"
	start PostgreSQL postgres.log postgres.log "${as[@]}" "${PGBIN}/postgres" -D "${pgdata}" -p "${PG_PORT}" -k "${WORK}" \
		-c listen_addresses=127.0.0.1 -c fsync=off
	for ((i = 0; i < 100; i++)); do
		"${PGBIN}/pg_isready" -q -h 127.0.0.1 -p "${PG_PORT}" && break
		sleep 0.1
	done
	"${PGBIN}/pg_isready" -q -h 127.0.0.1 -p "${PG_PORT}" || die "$(not_up PostgreSQL postgres.log "${PG_PORT}")"
	log "PostgreSQL is up: 127.0.0.1:${PG_PORT}"
	export DSN="postgres://postgres@127.0.0.1:${PG_PORT}/postgres?sslmode=disable"
	"${HYDRA}" migrate sql -e --yes >"${WORK}/hydra.log" 2>&1 || die "hydra migrate sql failed (see hydra.log)"
	cat >"${WORK}/hydra.yaml" <<HYDRA_YAML
serve:
  public: {host: 127.0.0.1, port: ${DEX_PORT}}
  admin: {host: 127.0.0.1, port: ${HYDRA_ADMIN_PORT}}
urls:
  self: {issuer: "${PUBLIC}"}
  login: ${PUBLIC}/ciba/hydra/login
  consent: ${PUBLIC}/ciba/hydra/consent
secrets:
  system: ["demo-only-system-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"]
HYDRA_YAML
	start Hydra hydra.log hydra.log "${HYDRA}" serve all --dev -c "${WORK}/hydra.yaml"
	upstream_pid="${PIDS[-1]}"
	helper wait "http://127.0.0.1:${HYDRA_ADMIN_PORT}/health/ready" 60 "${upstream_pid}" ||
		die "$(not_up Hydra hydra.log "${DEX_PORT} or ${HYDRA_ADMIN_PORT}")"
	helper post "http://127.0.0.1:${HYDRA_ADMIN_PORT}/admin/clients" "$(printf '{"client_id":"%s","client_secret":"%s","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"redirect_uris":["%s/ciba/hydra/callback"],"token_endpoint_auth_method":"client_secret_basic","scope":"openid email profile offline_access"}' "${CLIENT_ID}" "${CLIENT_SECRET}" "${PUBLIC}")" ||
		die "registering client ${CLIENT_ID} at Hydra failed"
	log "Hydra: client ${CLIENT_ID} registered (authorization_code, redirect URI ${PUBLIC}/ciba/hydra/callback)"
}

# ---- start -----------------------------------------------------------------

log "directory ${WORK}"
log "ports: cibaproxy ${PROXY_PORT}, ${UPSTREAM_NAME} ${DEX_PORT}, MailDev SMTP ${SMTP_PORT} and web ${WEB_PORT}"

start MailDev maildev.log maildev.log "${MAILDEV}" --ip 127.0.0.1 --web-ip 127.0.0.1 -s "${SMTP_PORT}" -w "${WEB_PORT}"
maildev_pid="${PIDS[-1]}"

if ((REPLICAS > 1)); then
	mkdir -p "${WORK}/redis"
	start Redis redis.log redis.log redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --dir "${WORK}/redis" \
		--appendonly yes --appendfsync always --save "" --protected-mode no
	for ((i = 0; i < 100; i++)); do
		[[ "$(redis-cli -p "${REDIS_PORT}" ping 2>/dev/null)" == PONG ]] && break
		sleep 0.1
	done
	[[ "$(redis-cli -p "${REDIS_PORT}" ping 2>/dev/null)" == PONG ]] || die "$(not_up Redis redis.log "${REDIS_PORT}")"
	log "Redis is up: 127.0.0.1:${REDIS_PORT} (appendonly yes, appendfsync always)"
	for ((i = 1; i <= REPLICAS; i++)); do
		start "replica ${i}" "replica${i}.log" "replica${i}.log" env CIBA_DEMO_CLIENT_SECRET="${CLIENT_SECRET}" \
			XDG_CONFIG_HOME="${WORK}/xdg${i}/config" XDG_DATA_HOME="${WORK}/xdg${i}/data" \
			"${CIBAPROXY}" run --config "${WORK}/Caddyfile.r${i}" --adapter caddyfile
		helper wait "http://127.0.0.1:${REPLICA_PORTS[i - 1]}/ciba/.well-known/openid-configuration" 30 "${PIDS[-1]}" jwks_uri ||
			die "$(not_up "replica ${i}" "replica${i}.log" "${REPLICA_PORTS[i - 1]}")"
		log "replica r${i} is up: http://127.0.0.1:${REPLICA_PORTS[i - 1]}"
	done
fi

if [[ "${UPSTREAM}" == hydra ]]; then
	start_hydra # before cibaproxy, which needs nothing of Hydra to start
fi

start cibaproxy cibaproxy.log cibaproxy.log env CIBA_DEMO_CLIENT_SECRET="${CLIENT_SECRET}" \
	XDG_CONFIG_HOME="${WORK}/xdg/config" XDG_DATA_HOME="${WORK}/xdg/data" \
	"${CIBAPROXY}" run --config "${WORK}/Caddyfile" --adapter caddyfile
proxy_pid="${PIDS[-1]}"

# Dex fetches the subject-token issuer's discovery once, at start, and exits
# if it cannot: cibaproxy must answer first.
helper wait "${PUBLIC}/ciba/.well-known/openid-configuration" 30 "${proxy_pid}" jwks_uri ||
	die "$(not_up cibaproxy cibaproxy.log "${PROXY_PORT}")"
log "cibaproxy is up: ${PUBLIC} (subject-token issuer ${PUBLIC}/ciba)"

if [[ "${UPSTREAM}" == dex ]]; then
	start Dex dex.log dex.log "${DEX}" serve "${WORK}/dex.yaml"
	upstream_pid="${PIDS[-1]}"
fi
# Through cibaproxy: the upstream's discovery with the CIBA endpoints added.
helper wait "${ISSUER}/.well-known/openid-configuration" 60 "${upstream_pid}" backchannel_authentication_endpoint ||
	die "$(not_up "${UPSTREAM_NAME}" "${UPSTREAM}.log" "${DEX_PORT}")"
log "${UPSTREAM_NAME} is up: issuer ${ISSUER} (listening on 127.0.0.1:${DEX_PORT})"

helper wait "${WEB}/api/email" 30 "${maildev_pid}" ||
	die "$(not_up MailDev maildev.log "${SMTP_PORT} or ${WEB_PORT}")"
log "MailDev is up: ${WEB}/index.html"

# ---- the login ---------------------------------------------------------------

login=("${CIBAPROXY}" ciba login --issuer "${ISSUER}" --client-id "${CLIENT_ID}"
	--login-hint "${LOGIN_HINT}" --binding-message "${BINDING_MESSAGE}" --claims)
[[ -n "${AUTO}" ]] && login+=(--timeout "${DEMO_TIMEOUT}s")

if [[ -n "${AUTO}" ]]; then
	log "AUTO=1: logging in as ${LOGIN_HINT}; approving through MailDev's API and the approval page"
	start "ciba login" login.out login.err env CIBA_CLIENT_SECRET="${CLIENT_SECRET}" "${login[@]}"
	login_pid="${PIDS[-1]}"
	helper approve "${WEB}" "${USER_EMAIL}" "${BINDING_MESSAGE}" "${DEMO_TIMEOUT}" || die "approving failed"
else
	cat >&2 <<EOF

  ================================================================
  A CIBA login for ${LOGIN_HINT} is starting. To approve it:
    1. open ${WEB}/index.html  (MailDev: the demo's mailbox)
    2. open the mail "Confirm your sign-in (cibaproxy demo)" to ${USER_EMAIL}
    3. click "Review the request" (or the link in the text);
       the page shows the code "${BINDING_MESSAGE}"
    4. press Approve (or Deny, to see access_denied)
  The request expires in 5 minutes. Ctrl-C stops everything.
  ================================================================

EOF
	# The CLI's progress goes to this terminal.
	(cd "${WORK}" && exec env CIBA_CLIENT_SECRET="${CLIENT_SECRET}" "${login[@]}") >"${WORK}/login.out" &
	PIDS+=("$!")
	NAMES+=("ciba login")
	login_pid="$!"
fi

login_status=0
wait "${login_pid}" || login_status=$?
[[ -n "${AUTO}" ]] && cat "${WORK}/login.err" >&2
if ((login_status != 0)) && [[ -z "${AUTO}" && "${login_status}" == 1 ]]; then
	# A person denied, or let the request expire: the CLI said so above.
	QUIET_FAILURE=1
	die "no tokens: the login did not succeed (the line above says why)"
fi
((login_status == 0)) || die "cibaproxy ciba login exited with status ${login_status}"

printf '\n' >&2
log "the CLI's output (token response and the verified ID token's claims):"
cat "${WORK}/login.out"
printf '\n'
echo "demo: OK: ${LOGIN_HINT} approved the CIBA login; ${UPSTREAM_NAME} issued tokens to client ${CLIENT_ID}:"
helper check "${WORK}/login.out" "${ISSUER}" "${CLIENT_ID}" "${USER_EMAIL}" "${USER_NAME}" ||
	die "the CLI succeeded but its output does not check out"
if ((REPLICAS > 1)); then
	# What each replica served, from its access log: every one took part.
	echo "demo: ${REPLICAS} replicas on one Redis, behind a round-robin balancer; requests each served:"
	printf '  %-8s %12s %14s %12s %8s\n' replica backchannel "approval page" "token polls" other
	idle=0
	for ((i = 1; i <= REPLICAS; i++)); do
		f="${WORK}/replica${i}.log"
		bc=$(grep -c '"uri":"/bc-authorize"' "${f}" || true)
		page=$(grep -c '"uri":"/ciba/approve/' "${f}" || true)
		tok=$(grep -c '"uri":"/dex/token"' "${f}" || true)
		all=$(grep -c '"msg":"handled request"' "${f}" || true)
		printf '  %-8s %12d %14d %12d %8d\n' "r${i}" "${bc}" "${page}" "${tok}" $((all - bc - page - tok))
		((all > 0)) || idle=1
	done
	((idle == 0)) || die "a replica served no request: the balancer did not spread the flow"
fi
