#!/usr/bin/env bash
# `make images`: the image of every service and of the example sensor for each
# of PLATFORMS, named $REGISTRY/cloud-block-<name>, tagged with each of
# IMAGE_TAGS. The Makefile passes SERVICES, VERSION, REGISTRY, IMAGE_TAGS,
# PLATFORMS and PUSH; DOCKER names the client (default: docker).
#
# - With docker buildx and an engine: one multi-arch tag per name, kept in
#   the buildx cache, or pushed with PUSH=1.
# - An engine without buildx: one build per platform (each Dockerfile's build
#   stage cross-compiles on the engine's own platform: no emulation), tagged
#   <tag>-<arch> (amd64, arm64, armv7); the engine's own platform is also
#   tagged <tag>, the name `docker run` and the compose files use. A local
#   image store holds one platform per tag.
# - No engine answers: on Debian as root, the project's engine
#   (scripts/setup.sh engine-run) with the base images made locally; it is
#   stopped afterwards, keeping the images in .cache/docker.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${SERVICES:?}" "${VERSION:?}" "${REGISTRY:?}" "${IMAGE_TAGS:?}" "${PLATFORMS:?}"
docker="${DOCKER:-docker}"

if ! "$docker" info >/dev/null 2>&1; then
	if [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "make images: no engine answers; using the project's engine (Debian's docker.io)"
		scripts/setup.sh docker
		exec scripts/setup.sh engine-run sh -c 'scripts/setup.sh base-images && "$0"' "$0"
	fi
	echo "make images: no container engine answers (\`$docker info\` failed): no image was built." >&2
	echo "  On Debian as root it starts one of its own; elsewhere start Docker first." >&2
	exit 1
fi

if "$docker" buildx version >/dev/null 2>&1; then
	for img in $SERVICES sensor; do
		if [ "$img" = sensor ]; then ctx=examples/sensor; df=examples/sensor/Dockerfile; else ctx=.; df=services/$img/Dockerfile; fi
		tags=()
		for t in $IMAGE_TAGS; do tags+=(-t "$REGISTRY/cloud-block-$img:$t"); done
		echo "== $REGISTRY/cloud-block-$img: $IMAGE_TAGS for $PLATFORMS"
		"$docker" buildx build --platform "$PLATFORMS" -f "$df" --build-arg "VERSION=$VERSION" "${tags[@]}" ${PUSH:+--push} "$ctx"
	done
	exit 0
fi

if [ -n "${PUSH:-}" ]; then
	echo "make images: PUSH=1 needs docker buildx (one multi-arch tag per image); this client has none." >&2
	exit 1
fi
native="$("$docker" version -f '{{.Server.Os}}/{{.Server.Arch}}')"
log="$root/.cache/images-build.log"
mkdir -p "$root/.cache"
for img in $SERVICES sensor; do
	if [ "$img" = sensor ]; then ctx=examples/sensor; df=examples/sensor/Dockerfile; else ctx=.; df=services/$img/Dockerfile; fi
	for platform in ${PLATFORMS//,/ }; do
		arch="${platform#linux/}"
		arch="${arch//\//}" # arm/v7 -> armv7
		tags=()
		for t in $IMAGE_TAGS; do
			tags+=(-t "$REGISTRY/cloud-block-$img:$t-$arch")
			# The engine's own platform (an arm/v7 engine reports linux/arm).
			if [ "$platform" = "$native" ] || [ "$platform" = "$native/v7" ]; then tags+=(-t "$REGISTRY/cloud-block-$img:$t"); fi
		done
		start=$SECONDS
		# --network host: the project's engine has no default bridge
		# (setup.sh), and the build stage downloads modules. The Dockerfile
		# comes on stdin: Docker 20.10's BuildKit reuses the previous build's
		# Dockerfile when the next has the same name, size and modification
		# time (services/azure-blob's and gcp-pubsub's are the same size, and
		# a checkout can give them the same time): the gcp-pubsub image held
		# the azure-blob binary. Read from stdin it is a new file each time.
		if ! DOCKER_BUILDKIT=1 "$docker" build --progress=plain --network host --platform "$platform" \
			-f - --build-arg "VERSION=$VERSION" "${tags[@]}" "$ctx" <"$df" >"$log" 2>&1; then
			tail -n 40 "$log" >&2
			echo "make images: building $REGISTRY/cloud-block-$img for $platform failed (log: $log)" >&2
			exit 1
		fi
		size="$("$docker" image inspect -f '{{.Size}}' "$REGISTRY/cloud-block-$img:${IMAGE_TAGS%% *}-$arch")"
		awk -v n="$REGISTRY/cloud-block-$img:{$(echo $IMAGE_TAGS | tr ' ' ',')}-$arch" -v s="$size" -v t=$((SECONDS - start)) \
			'BEGIN { printf "%-64s %6.1f MB  built in %ds\n", n, s/1e6, t }'
	done
done
