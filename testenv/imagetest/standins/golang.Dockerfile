# A local stand-in for the official golang:<version>-bookworm image, for an
# engine that cannot reach a registry (scripts/setup.sh base-images builds it
# and tags it with the official name). The repository's Dockerfiles then build
# unchanged: their build stage needs a shell, the Go toolchain and Debian's CA
# bundle at /etc/ssl/certs/ca-certificates.crt (which the final images copy).
#
# Context (made by setup.sh): go/, the toolchain of the tagged version, and
# host-ca-certificates.crt, the build machine's CA bundle. Go trusts that one
# (SSL_CERT_FILE) to reach the module proxy as the host does (a machine behind
# a TLS-inspecting proxy has its CA there); the images keep Debian's bundle.
FROM cloudblock-standin/debian:bookworm
ARG GOLANG_VERSION
COPY go/ /usr/local/go/
COPY host-ca-certificates.crt /etc/ssl/host-ca-certificates.crt
ENV GOLANG_VERSION=${GOLANG_VERSION} GOTOOLCHAIN=local GOPATH=/go \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/host-ca-certificates.crt
WORKDIR /go
