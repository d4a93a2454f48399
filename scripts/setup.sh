#!/usr/bin/env bash
# Installs what the tests, benchmarks and demo need on a fresh Debian machine
# with Go, idempotently: a warm machine skips every step.
#   scripts/setup.sh mosquitto      Debian's mosquitto broker
#   scripts/setup.sh promtool       promtool from Debian's prometheus package, into .cache/bin
#   scripts/setup.sh chromium       Debian's chromium, for rendering the status page headless
#   scripts/setup.sh node           npm packages pinned in testenv/node (Azurite, rhea)
#   scripts/setup.sh tools NAME...  pinned Go tools (emulators) into .cache/bin
#   scripts/setup.sh docker         Debian's container engine, docker-compose, qemu-user, debootstrap
#   scripts/setup.sh engine start|stop|status|probe
#                                   the project's own engine (dockerd on $ENGINE_SOCK, data in
#                                   .cache/docker), started in the background and stopped by its PID;
#                                   probe: whether it can start here (installs it, starts, stops)
#   scripts/setup.sh engine-run CMD...
#                                   CMD with DOCKER_HOST on the project's engine, started for it
#                                   (and stopped after, by its PID) unless it was running already
#   scripts/setup.sh base-images    on the project's engine: the base images the Dockerfiles name,
#                                   made locally (no registry is reachable), cached in .cache/images
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The project's engine: paths of its own, so it never meets another engine on
# the machine (a docker.service started by the package, for one).
ENGINE_SOCK=/run/cloudblock-docker.sock
ENGINE_PIDFILE=/run/cloudblock-docker.pid
ENGINE_EXEC=/run/cloudblock-docker
ENGINE_DATA="$root/.cache/docker"
ENGINE_LOG="$root/.cache/docker.log"
ENGINE_LOCK=/run/cloudblock-docker.lock
# The client that matches Debian's engine (20.10): it has BuildKit built in.
# A newer client elsewhere on PATH (docker 28 at /usr/local/bin) needs the
# buildx plugin for the same builds, and Debian has none.
ENGINE_CLI=/usr/bin/docker

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# edocker: the client, on the project's engine.
edocker() {
	DOCKER_HOST="unix://$ENGINE_SOCK" "$ENGINE_CLI" "$@"
}

engine_up() {
	[ -S "$ENGINE_SOCK" ] && edocker version >/dev/null 2>&1
}

docker_packages() {
	local need=()
	[ -x /usr/sbin/dockerd ] && [ -x "$ENGINE_CLI" ] || need+=(docker.io)
	command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
	[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
	[ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
	[ "${#need[@]}" -gt 0 ] || return 0
	echo "setup: installing ${need[*]} from Debian (one time)"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq
	as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# qemu-user for the arm64 and arm/v7 images, registered as systemd-binfmt
# would at boot (qemu-user-static's own files, whose flags include F: the
# interpreter is opened once, so it also serves inside containers).
register_qemu() {
	local dir=/proc/sys/fs/binfmt_misc arch
	if [ ! -e "$dir/register" ]; then
		as_root mount -t binfmt_misc binfmt_misc "$dir"
	fi
	for arch in aarch64 arm; do
		if [ ! -e "$dir/qemu-$arch" ]; then
			echo "setup: registering qemu-$arch with binfmt_misc"
			as_root sh -c "cat /usr/lib/binfmt.d/qemu-$arch.conf > $dir/register"
		fi
	done
}

engine_start() {
	if engine_up; then
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: the project's engine runs dockerd as root; run as root (CI does)" >&2
		return 1
	fi
	[ -x /usr/sbin/dockerd ] || docker_packages
	mkdir -p "$ENGINE_DATA"
	echo "setup: starting the project's engine (dockerd, DOCKER_HOST=unix://$ENGINE_SOCK, log $ENGINE_LOG)"
	# --bridge none: no docker0, so nothing to share with another engine;
	# the tests make networks of their own, and builds use the host's network.
	setsid /usr/sbin/dockerd --host "unix://$ENGINE_SOCK" --pidfile "$ENGINE_PIDFILE" \
		--data-root "$ENGINE_DATA" --exec-root "$ENGINE_EXEC" --bridge none \
		</dev/null >"$ENGINE_LOG" 2>&1 9>&- &
	local pid=$! i
	for i in $(seq 1 120); do
		if engine_up; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "setup: dockerd exited; the end of $ENGINE_LOG:" >&2
			tail -n 20 "$ENGINE_LOG" >&2
			return 1
		fi
		sleep 0.25
	done
	echo "setup: dockerd (pid $pid) did not answer on $ENGINE_SOCK in 30 s; the end of $ENGINE_LOG:" >&2
	tail -n 20 "$ENGINE_LOG" >&2
	kill "$pid" 2>/dev/null || true
	return 1
}

engine_stop() {
	local pid i
	pid="$(cat "$ENGINE_PIDFILE" 2>/dev/null || true)"
	if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
		return 0
	fi
	echo "setup: stopping the project's engine (dockerd pid $pid)"
	kill -TERM "$pid"
	# dockerd stops its containers (their own grace periods) and containerd.
	for i in $(seq 1 240); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.25
	done
	echo "setup: dockerd (pid $pid) still running after 60 s; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
}

# standin_current TAG LABEL: whether TAG exists and was made from LABEL's inputs.
standin_current() {
	[ "$(edocker image inspect -f '{{index .Config.Labels "org.cloud-block.standin"}}' "$1" 2>/dev/null)" = "$2" ]
}

# standin_build TAG LABEL DOCKERFILE CONTEXT [ARG...]
standin_build() {
	local tag="$1" label="$2" df="$3" ctx="$4"
	shift 4
	echo "setup: building the local stand-in for $tag"
	# The Dockerfile on stdin, as scripts/images.sh gives it (why: there).
	DOCKER_BUILDKIT=1 edocker build -q --network host \
		--label "org.cloud-block.standin=$label" -f - -t "$tag" "$@" "$ctx" <"$df" >/dev/null
}

# The images the Dockerfiles name (their FROM lines and the syntax line), made
# locally: a Debian root filesystem from debootstrap, imported, and on it the
# Go toolchain or Debian's Mosquitto; BuildKit's Dockerfile frontend built from
# source. Each carries a label with a hash of what it was made from, so a warm
# machine skips it and a change rebuilds it. Only ever on the project's engine:
# in any other, these names belong to the official images.
base_images() {
	engine_up || { echo "setup: base-images needs the project's engine: scripts/setup.sh engine start" >&2; return 1; }
	local dir="$root/.cache/images" standins="$root/testenv/imagetest/standins"
	mkdir -p "$dir"

	# Debian bookworm, minbase with the CA bundle (the images copy it).
	local rootfs="$dir/debian-bookworm-minbase.tar" mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
	if [ ! -f "$rootfs" ]; then
		echo "setup: debootstrap of Debian bookworm (one time, about a minute)"
		local tmp="$dir/rootfs.tmp"
		as_root rm -rf "$tmp"
		as_root debootstrap --variant=minbase --include=ca-certificates bookworm "$tmp" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
			{ tail -n 20 "$dir/debootstrap.log" >&2; return 1; }
		as_root rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb
		as_root tar -C "$tmp" --numeric-owner -cf "$rootfs.tmp" .
		mv "$rootfs.tmp" "$rootfs"
		as_root rm -rf "$tmp"
	fi
	local label
	label="$(sha256sum "$rootfs" | cut -c1-16)"
	if ! standin_current cloudblock-standin/debian:bookworm "$label"; then
		echo "setup: importing the Debian root filesystem as cloudblock-standin/debian:bookworm"
		edocker import --change "LABEL org.cloud-block.standin=$label" --change 'CMD ["bash"]' \
			"$rootfs" cloudblock-standin/debian:bookworm >/dev/null
	fi

	# golang:<v>-bookworm, the version every service Dockerfile names.
	local gotag gov goroot ctx
	gotag="$(sed -n 's/^FROM --platform=\$BUILDPLATFORM \(golang:[^ ]*\) AS build$/\1/p' "$root/services/aws-s3/Dockerfile")"
	gov="${gotag#golang:}"
	gov="${gov%-bookworm}"
	label="go$gov-$(cat "$standins/golang.Dockerfile" /etc/ssl/certs/ca-certificates.crt | sha256sum | cut -c1-16)"
	if ! standin_current "$gotag" "$label"; then
		if [ "$(go env GOVERSION)" = "go$gov" ]; then
			goroot="$(go env GOROOT)"
		else
			# The module proxy serves every Go release as a toolchain module.
			goroot="$(GOTOOLCHAIN="go$gov" go env GOROOT)"
		fi
		ctx="$dir/golang-context"
		rm -rf "$ctx"
		mkdir -p "$ctx"
		cp -al "$goroot" "$ctx/go" 2>/dev/null || cp -a "$goroot" "$ctx/go"
		cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca-certificates.crt"
		standin_build "$gotag" "$label" "$standins/golang.Dockerfile" "$ctx" --build-arg "GOLANG_VERSION=$gov"
		rm -rf "$ctx"
	fi

	# The broker's base, as compose/mosquitto/Dockerfile names it.
	local mqtag
	mqtag="$(sed -n 's/^FROM \(eclipse-mosquitto:[^ ]*\)$/\1/p' "$root/compose/mosquitto/Dockerfile")"
	label="$(sha256sum <"$standins/mosquitto.Dockerfile" | cut -c1-16)"
	if ! standin_current "$mqtag" "$label"; then
		ctx="$dir/empty-context"
		mkdir -p "$ctx"
		standin_build "$mqtag" "$label" "$standins/mosquitto.Dockerfile" "$ctx"
	fi

	# The frontend of the Dockerfiles' `# syntax=` line.
	local fetag
	fetag="$(sed -n '1s/^# syntax=\(.*\)$/\1/p' "$root/services/aws-s3/Dockerfile")"
	label="$(cat "$standins/dockerfile-frontend.Dockerfile" "$standins/frontend/go.mod" "$standins/frontend/go.sum" | sha256sum | cut -c1-16)"
	if [ -n "$fetag" ] && ! standin_current "$fetag" "$label"; then
		ctx="$dir/frontend-context"
		rm -rf "$ctx"
		mkdir -p "$ctx"
		echo "setup: building BuildKit's Dockerfile frontend (one time, a minute or two)"
		(cd "$standins/frontend" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
			-o "$ctx/dockerfile-frontend" github.com/moby/buildkit/frontend/dockerfile/cmd/dockerfile-frontend)
		standin_build "$fetag" "$label" "$standins/dockerfile-frontend.Dockerfile" "$ctx"
		rm -rf "$ctx"
	fi
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
promtool)
	# Only promtool, taken out of Debian's prometheus package: installing the
	# package would start the Prometheus server (its init script or systemd
	# unit), listening on :9090 on every interface.
	bin="$root/.cache/bin"
	if [ -x "$bin/promtool" ] || command -v promtool >/dev/null 2>&1; then
		exit 0
	fi
	echo "setup: extracting promtool from Debian's prometheus package into .cache/bin (one time)"
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	# apt-get download needs no root, only the package lists (updated if it fails).
	if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
		export DEBIAN_FRONTEND=noninteractive
		as_root apt-get update -qq
		(cd "$tmp" && apt-get download -qq prometheus >/dev/null)
	fi
	dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
	mkdir -p "$bin"
	mv "$tmp/usr/bin/promtool" "$bin/promtool"
	;;
chromium)
	# testenv/pagetest renders the status page in it (--headless, no display).
	# A font, so that the screenshot has text on a minimal system.
	if [ -x /usr/bin/chromium ] && [ -d /usr/share/fonts/truetype/dejavu ]; then
		exit 0
	fi
	echo "setup: installing chromium from Debian (one time)"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq
	as_root apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
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
docker)
	docker_packages
	register_qemu
	;;
engine)
	case "${1:-}" in
	start) engine_start ;;
	stop) engine_stop ;;
	probe)
		# Whether the engine can run here: install it, start it and stop it
		# again (unless it was running). Says why not on failure.
		engine_up && exit 0
		[ "$(id -u)" -eq 0 ] || { echo "the project's engine runs dockerd as root"; exit 1; }
		command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: Debian's docker.io cannot be installed"; exit 1; }
		docker_packages >/dev/null || { echo "installing Debian's docker.io, docker-compose, qemu-user-static, debootstrap failed"; exit 1; }
		engine_start >/dev/null 2>&1 || { echo "dockerd did not start: $(tail -n 3 "$ENGINE_LOG" 2>/dev/null | tr '\n' ' ')"; exit 1; }
		engine_stop >/dev/null
		;;
	status)
		if engine_up; then echo "engine: running (pid $(cat "$ENGINE_PIDFILE" 2>/dev/null)), DOCKER_HOST=unix://$ENGINE_SOCK"; else echo "engine: not running"; exit 1; fi
		;;
	*) echo "usage: $0 engine start|stop|status|probe" >&2; exit 2 ;;
	esac
	;;
engine-run)
	[ "$#" -gt 0 ] || { echo "usage: $0 engine-run CMD..." >&2; exit 2; }
	# One run at a time: a run that started the engine stops it when it
	# ends, which must not happen under another's feet.
	exec 9>"$ENGINE_LOCK"
	if ! flock -n 9; then
		echo "setup: waiting for another run on the project's engine to end"
		flock 9
	fi
	started=
	if ! engine_up; then
		engine_start
		started=1
	fi
	# Stop it after CMD, however CMD ends (but not one that was running before).
	trap '[ -z "$started" ] || engine_stop' EXIT
	trap 'exit 130' INT TERM
	DOCKER_HOST="unix://$ENGINE_SOCK" DOCKER="$ENGINE_CLI" "$@"
	;;
base-images)
	base_images
	;;
*)
	echo "usage: $0 mosquitto | promtool | chromium | node | tools NAME... | docker | engine start|stop|status | engine-run CMD... | base-images" >&2
	exit 2
	;;
esac
