#!/usr/bin/env bash
# Builds the pinned test tools (emulators) of tools/go.mod into .cache/bin/.
#   scripts/build-tools.sh [TOOL...]    e.g. fake-gcs-server versitygw
# With no arguments it builds every tool the module pins. A tool is named by
# the last element of its package path. Idempotent: a binary newer than
# tools/go.mod is kept, so a warm machine skips the slow cold builds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.cache/bin"
mod="$root/tools/go.mod"
mkdir -p "$bin"

# The tools module is deliberately outside go.work (its dependencies must not
# leak into the services' builds), so the workspace is switched off here.
export GOWORK=off

# Package paths from the `tool` directives, in block or single-line form.
mapfile -t pkgs < <(awk '
	/^tool[ \t]*\(/ { inblock = 1; next }
	inblock && /^\)/ { inblock = 0; next }
	inblock && NF { print $1; next }
	/^tool[ \t]+[^(]/ { print $2 }
' "$mod")

if [ "$#" -eq 0 ]; then
	set -- "${pkgs[@]##*/}"
fi

for name in "$@"; do
	pkg=""
	for p in "${pkgs[@]}"; do
		if [ "${p##*/}" = "$name" ]; then pkg="$p"; fi
	done
	if [ -z "$pkg" ]; then
		echo "$name: not pinned in tools/go.mod (pinned: ${pkgs[*]##*/})" >&2
		exit 2
	fi
	out="$bin/$name"
	if [ -x "$out" ] && [ "$out" -nt "$mod" ]; then
		echo "$name: up to date ($out)"
		continue
	fi
	start=$SECONDS
	# Build beside the target and rename, so a test that looks for the binary
	# while a build runs never finds a half-written file.
	tmp="$out.tmp.$$"
	(cd "$root/tools" && go build -o "$tmp" "$pkg")
	mv -f "$tmp" "$out"
	echo "$name: built in $((SECONDS - start))s ($out)"
done
