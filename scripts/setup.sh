#!/usr/bin/env bash
# Installs what the tests, benchmarks and demo need on a fresh Debian machine
# with Go, idempotently: a warm machine skips every step.
#   scripts/setup.sh mosquitto      Debian's mosquitto broker
#   scripts/setup.sh node           npm packages pinned in testenv/node (Azurite, rhea)
#   scripts/setup.sh tools NAME...  pinned Go tools (emulators) into .cache/bin
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

part="${1:-}"
shift || true
case "$part" in
mosquitto)
	if [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1; then
		exit 0
	fi
	echo "setup: installing mosquitto from Debian (one time)"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq
	as_root apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
	;;
node)
	dir="$root/testenv/node"
	stamp="$dir/node_modules/.package-lock.json"
	if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
		exit 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		echo "setup: npm not found; installing Debian's nodejs and npm"
		export DEBIAN_FRONTEND=noninteractive
		as_root apt-get update -qq
		as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
	fi
	echo "setup: npm ci in testenv/node (one time)"
	npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
	;;
tools)
	"$root/scripts/build-tools.sh" "$@"
	;;
*)
	echo "usage: $0 mosquitto | node | tools NAME..." >&2
	exit 2
	;;
esac
