# cibaproxy — the two commands of the README:
#   make demo   a full local CIBA flow (cibaproxy + Dex + a mail catcher on loopback)
#   make test   every test; CI runs it (.ci/run)
# Both install what they need (make tools) and depend on nothing a previous
# session left behind.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
export GOFLAGS := -buildvcs=false
ROOT := $(abspath .)
BIN := $(ROOT)/bin
CIBAPROXY := $(BIN)/cibaproxy
# Fuzzing budgets are counts of executions, not durations: a duration
# -fuzztime can fail with a bare "context deadline exceeded" and no crasher
# when the deadline races a busy worker (golang/go#75804, unfixed in Go
# 1.26). Each count is about 8 s on a 2-core VM; FUZZSCALE multiplies them.
FUZZSCALE ?= 1
FUZZ_TARGETS := FuzzBackchannelRequest:24000 FuzzTokenRequest:24000 \
	FuzzRequestObject:8000 FuzzClientAssertion:8000 FuzzServer:4000

.PHONY: all build tools dex hydra postgres maildev chromium redis test check unit caddy e2e fuzz demo bench soak clean

all: build

## build: the cibaproxy binary (Caddy's standard modules + the ciba handler)
build:
	$(GO) build -o $(CIBAPROXY) ./cmd/cibaproxy

## tools: pinned Dex (bin/dex) and Ory Hydra (bin/hydra), Debian's
## PostgreSQL (for Hydra), MailDev (scripts/maildev), Debian's Chromium,
## Debian's redis-server and redis-sentinel
tools: dex hydra postgres maildev chromium redis

dex:
	scripts/install-dex.sh

hydra:
	scripts/install-hydra.sh

postgres:
	scripts/install-postgres.sh

maildev:
	scripts/install-maildev.sh

chromium:
	scripts/install-chromium.sh

redis:
	scripts/install-redis.sh

## test: formatting and vet, unit tests with -race, Caddy-level tests, the
## end-to-end tests against the built binary (Dex, SMTP, Chromium), brief
## fuzzing, and the demo in AUTO mode, on one process and on three replicas.
test: tools build check unit caddy e2e fuzz
	$(MAKE) --no-print-directory demo AUTO=1
	$(MAKE) --no-print-directory demo AUTO=1 REPLICAS=3
	$(MAKE) --no-print-directory demo AUTO=1 UPSTREAM=hydra

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The Redis tests must not skip in CI either: make tools installed
# redis-server, and each test starts its own on a free loopback port.
unit:
	CIBAPROXY_REQUIRE_REDIS=1 $(GO) test -race -count=1 ./cibaproxy/...

caddy:
	CIBAPROXY_REQUIRE_REDIS=1 $(GO) test -count=1 ./caddymodule/...

# No end-to-end test may skip in CI: make tools installed Chromium, Dex,
# Hydra, PostgreSQL and redis-server, the REQUIRE variables turn their absence into failures, and
# any other skip fails the target (the verbose log, kept in bin/e2e.log,
# names every skipped test). Screenshots of the approval page are kept in
# bin/artifacts.
e2e: build
	CIBAPROXY_BIN=$(CIBAPROXY) DEX_BIN=$(BIN)/dex HYDRA_BIN=$(BIN)/hydra CIBAPROXY_REQUIRE_BROWSER=1 CIBAPROXY_REQUIRE_REDIS=1 \
		CIBAPROXY_REQUIRE_DEX=1 CIBAPROXY_REQUIRE_HYDRA=1 CIBAPROXY_ARTIFACTS=$(BIN)/artifacts \
		$(GO) test -count=1 -v ./e2e/... 2>&1 | tee $(BIN)/e2e.log
	@if grep -E '^\s*--- SKIP:' $(BIN)/e2e.log; then echo "e2e: the tests above were skipped; every end-to-end test must run"; exit 1; fi

fuzz:
	for t in $(FUZZ_TARGETS); do \
		f=$${t%%:*}; n=$$(( $${t##*:} * $(FUZZSCALE) )); \
		$(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$${n}x -fuzzminimizetime=2000x ./cibaproxy || exit 1; \
	done

## demo: start cibaproxy, Dex and MailDev on loopback and log in with the
## CLI; AUTO=1 approves by itself and exits 0 when the tokens verify;
## REPLICAS=3 runs three replicas on one Redis behind a Caddy balancer;
## UPSTREAM=hydra runs Ory Hydra on PostgreSQL instead of Dex (mint hydra).
REPLICAS ?= 1
UPSTREAM ?= dex
demo: tools build
	AUTO=$(AUTO) REPLICAS=$(REPLICAS) UPSTREAM=$(UPSTREAM) scripts/demo.sh

## bench: Go benchmarks of the hot paths and a loopback load run of the
## real binary beside a plain Caddy respond route; prints one table and
## writes it as JSON to bin/bench.json.
STORE ?= badger
bench: build $(if $(filter redis,$(STORE)),redis)
	STORE=$(STORE) scripts/bench.sh

## soak: a chaos soak (not part of make test; about 4 min): tens of devices
## log in against the binary, Dex and an SMTP server of the soak's own while
## the proxy is killed (-9) and restarted and SMTP, Dex (and Redis) go down
## and come back; prints the figures, fails on any loss or wrong answer.
SOAK_DURATION ?= 3m
SOAK_DEVICES ?= 20
SOAK_STORE ?= badger
soak: tools build
	SOAK_DURATION=$(SOAK_DURATION) SOAK_DEVICES=$(SOAK_DEVICES) SOAK_STORE=$(SOAK_STORE) scripts/soak.sh

clean:
	rm -rf $(BIN) scripts/maildev/node_modules
