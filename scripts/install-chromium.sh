#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test of the approval page,
# unless it is already there. Needs root (apt-get) on a fresh machine.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
	echo "install-chromium: $(chromium --version 2>/dev/null | head -1) already installed" >&2
	exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
	echo "install-chromium: ERROR: chromium is missing and installing it needs root (apt-get install chromium)" >&2
	exit 1
fi
echo "install-chromium: apt-get install chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version >&2 || true
