# A local stand-in for docker/dockerfile:1, the BuildKit frontend the
# repository's Dockerfiles name on their `# syntax=` line, for an engine that
# cannot reach a registry: BuildKit fetches that image before it reads
# anything else. It is the same program (BuildKit's dockerfile-frontend, the
# version pinned in frontend/go.mod), built by scripts/setup.sh base-images
# and laid out as the official image.
FROM scratch
COPY dockerfile-frontend /bin/dockerfile-frontend
LABEL moby.buildkit.frontend.network.none="true"
LABEL moby.buildkit.frontend.caps="moby.buildkit.frontend.inputs,moby.buildkit.frontend.subrequests,moby.buildkit.frontend.contexts"
ENTRYPOINT ["/bin/dockerfile-frontend"]
