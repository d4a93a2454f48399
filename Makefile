# cloud-block: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
SERVICES := aws-sqs aws-s3 azure-eh azure-blob gcp-pubsub gcp-storage
ARCHS := amd64 arm64 arm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REGISTRY ?= ghcr.io/cloud-block
GO ?= go
# -race everywhere in tests; a generous timeout because cold SDK builds are slow on 2 cores.
# -ldflags=-w: test binaries without DWARF (stack traces and race reports do not
# use it), which takes a third off each link: make test links about 45 of them.
GOTEST ?= $(GO) test -race -count=1 -timeout 30m -ldflags=-w
# The build's date (the commit's, so builds stay reproducible): the block
# trusts no system clock earlier than it (common/clock).
BUILD_DATE ?= $(shell TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null)
LDFLAGS := -s -w -X github.com/cloud-block/cloud-block/common/run.Version=$(VERSION) -X github.com/cloud-block/cloud-block/common/clock.BuildDate=$(BUILD_DATE)

.PHONY: help setup test test-common lint bench build docs demo images test-build dockerfiles clean $(addprefix test-,$(SERVICES)) $(addprefix build-,$(SERVICES))

help:
	@echo "make demo            run the block on a local emulator (SERVICE=$(SERVICES))"
	@echo "make test            every test (installs what it needs)"
	@echo "make test-common     the common pipeline, the test servers and the block suite through the file destination"
	@echo "make test-faults     the block suite for every destination at full scale (BLOCKTEST_SOAK=1: 10 min soak), the MQTT redelivery model at 3,000 games"
	@echo "make test-<service>  one destination and the block suite against its emulator: $(SERVICES)"
	@echo "make bench           throughput, CPU and memory ratios measured within one run"
	@echo "make build           static binaries for linux amd64, arm64 and arm/v7 into bin/, checked"
	@echo "make test-build      build checks on fresh amd64 binaries: static, size budgets, empty root"
	@echo "make images          images for amd64, arm64 and arm/v7 (PUSH=1 with buildx: push to REGISTRY=$(REGISTRY))"
	@echo "make test-images     every image and compose file under a container engine started here"
	@echo "make docs            regenerate the env tables in each service README"
	@echo "make lint            gofmt and go vet"

# --- set-up (idempotent) -------------------------------------------------------
.cache/setup-mosquitto:
	@scripts/setup.sh mosquitto && mkdir -p .cache && touch $@
.cache/setup-promtool:
	@scripts/setup.sh promtool && mkdir -p .cache && touch $@
.cache/setup-chromium:
	@scripts/setup.sh chromium && mkdir -p .cache && touch $@
.cache/setup-node: testenv/node/package-lock.json
	@scripts/setup.sh node && mkdir -p .cache && touch $@
setup: .cache/setup-mosquitto .cache/setup-node .cache/setup-promtool .cache/setup-chromium tools
tools:
	@scripts/setup.sh tools fake-gcs-server versitygw gofakes3

# What each destination's tests need besides Mosquitto.
setup-aws-sqs setup-gcp-pubsub:
setup-aws-s3:
	@scripts/setup.sh tools versitygw
setup-azure-eh setup-azure-blob: .cache/setup-node
setup-gcp-storage:
	@scripts/setup.sh tools fake-gcs-server
.PHONY: tools setup-aws-sqs setup-aws-s3 setup-azure-eh setup-azure-blob setup-gcp-pubsub setup-gcp-storage

# --- demo -----------------------------------------------------------------------
# `make demo [SERVICE=<name>]`: Mosquitto, the destination's local emulator, the
# block and the example sensor (testenv/cmd/demo), printing what arrives until
# Ctrl-C. It builds what it runs from this checkout.
SERVICE ?= aws-s3
# What each destination's demo needs besides Mosquitto. The S3 and SQS emulators
# run inside the demo (versitygw, which the S3 tests also use, is not needed);
# pstest-server is built by the demo itself.
demo-setup-aws-s3 demo-setup-aws-sqs demo-setup-gcp-pubsub:
demo-setup-azure-eh demo-setup-azure-blob: .cache/setup-node
demo-setup-gcp-storage:
	@scripts/setup.sh tools fake-gcs-server
demo: .cache/setup-mosquitto
	@case " $(SERVICES) " in *" $(SERVICE) "*) ;; *) echo "make demo: SERVICE=$(SERVICE) is not one of: $(SERVICES)" >&2; exit 2;; esac
	@$(MAKE) --no-print-directory demo-setup-$(SERVICE)
	@echo "make demo: building the demo (a minute or two the first time, then seconds)"
	@$(GO) build -o .cache/bin/demo ./testenv/cmd/demo
	@.cache/bin/demo -service $(SERVICE)
.PHONY: $(addprefix demo-setup-,$(SERVICES))

# --- tests ----------------------------------------------------------------------
# `make test` runs everything: lint, then every package's tests in one go
# test (it runs packages in parallel, one per core). testenv/blocktest is the
# block-level suite: every scenario for every destination through the real
# binaries, Mosquitto and the emulators, at its Small scale here; `make
# test-faults` runs it at full scale (100,000 messages x 10 SIGKILLs per
# destination, 60 s outages, the full disk and the soak).
#
# The slowest packages are named first, so that go test starts them first.
# Then the images and compose files under the project's engine
# (test-images), where one can be started; else make test says why not. (Run
# in the same go test as the rest, four packages at once, they overloaded two
# cores: load 20-30, health checks past their 10 s timeout.)
PKGS := ./common/... ./testenv/... ./examples/sensor/... $(addsuffix /...,$(addprefix ./services/,$(SERVICES)))
SLOW_PKGS := $(addprefix github.com/cloud-block/cloud-block/,testenv/blocktest testenv/checktest common/mqtt \
	services/azure-eh/ehsink services/azure-blob/blobsink services/aws-s3/s3sink)
TEST_PKGS = $(SLOW_PKGS) $(filter-out $(SLOW_PKGS),$(shell $(GO) list $(PKGS)))
test: lint setup $(addprefix setup-,$(SERVICES))
	@echo "make test: $(GOTEST) <every package, the slowest first>"
	@$(GOTEST) $(TEST_PKGS)
	@$(MAKE) --no-print-directory test-images-if-possible VERSION=$(VERSION)

# The common packages, the test servers and the block suite through the file
# destination (no emulator).
test-common: setup
	BLOCKTEST_TARGETS=file $(GOTEST) $(shell $(GO) list ./common/... ./testenv/...)

# Longer than GOTEST's 30 minutes, hence its own timeout. BLOCKTEST_SOAK=1: the
# ten-minute soak; BLOCKTEST_TARGETS and BLOCKTEST_SCENARIOS narrow the run.
test-faults: setup $(addprefix setup-,$(SERVICES))
	CLOUDBLOCK_ADVERSARY_RUNS=3000 $(GOTEST) -run TestRedeliveriesAdversarialBroker ./common/mqtt
	BLOCKTEST_SCALE=full $(GOTEST) -timeout 2h -v -run TestBlock ./testenv/blocktest
.PHONY: test-faults

# One destination: its packages, then the block suite for its targets.
$(addprefix test-,$(SERVICES)): test-%: .cache/setup-mosquitto setup-%
	$(GOTEST) ./services/$*/...
	BLOCKTEST_TARGETS=$* $(GOTEST) -run TestBlock ./testenv/blocktest

lint:
	@out=$$(gofmt -l common testenv services examples); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

bench: setup
	CLOUDBLOCK_BENCH=1 $(GO) test -count=1 -timeout 120m -run 'TestBenchPipeline|TestBenchServices|TestBenchFlash|TestBenchSDCard' -v ./testenv/bench/ | grep -v '^=== \|^--- \|^PASS\|^ok'

docs:
	UPDATE_DOCS=1 $(GO) test -count=1 -run "TestEnvTable|TestCommonEnvTable" ./common/run $(addsuffix /...,$(addprefix ./services/,$(SERVICES)))

# --- build ----------------------------------------------------------------------
# Static, stripped, reproducible binaries for the balena device families, then
# testenv/buildtest on what was written (static, within the size budgets, the
# amd64 ones run in an empty root holding only the CA bundle), and each
# Dockerfile's build stage run without Docker for arm/v7 (it must give the same
# bytes as a build in the repository).
build: $(addprefix build-,$(SERVICES))
	@BUILDTEST_BIN_DIR=$(CURDIR)/bin BUILDTEST_ARCHS="$(ARCHS)" BUILDTEST_DOCKERFILE=1 \
		$(GO) test -count=1 -timeout 60m -run 'TestBinaries|DockerfileBuildStage' ./testenv/buildtest
$(addprefix build-,$(SERVICES)): build-%:
	@for arch in $(ARCHS); do \
		out=bin/linux-$$arch$$( [ $$arch = arm ] && echo v7 )/cloud-block-$*; \
		( cd services/$* && CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=7 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o ../../$$out . ) || exit 1; \
		awk -v f=$$out -v s=$$(stat -c %s $$out) 'BEGIN { printf "%-48s %6.1f MiB\n", f, s/1048576 }'; \
	done

# The same checks on fresh amd64 builds (part of `make test`, through ./testenv/...).
test-build:
	$(GOTEST) ./testenv/buildtest
# Rewrites services/*/Dockerfile from testenv/buildtest/Dockerfile.tmpl.
dockerfiles:
	UPDATE_DOCKERFILES=1 $(GO) test -count=1 -run TestDockerfiles ./testenv/buildtest

# --- images -----------------------------------------------------------------------
# Every service's image and the example sensor's, for each platform, named
# $(REGISTRY)/cloud-block-<name> and tagged with each of IMAGE_TAGS
# (scripts/images.sh). With docker buildx: one multi-arch tag, in the buildx
# cache or pushed with PUSH=1 (docker login first). Without buildx: a build per
# platform, tagged <tag>-amd64, <tag>-arm64, <tag>-armv7, and <tag> for the
# engine's own platform (the build stage cross-compiles: no emulation). With no
# engine at all, on Debian as root, it starts the project's own (Debian's
# docker.io, scripts/setup.sh engine) with locally made base images. The
# compose files use :latest.
PLATFORMS ?= linux/amd64,linux/arm64,linux/arm/v7
IMAGE_TAGS ?= $(VERSION) latest
images:
	@SERVICES="$(SERVICES)" VERSION="$(VERSION)" REGISTRY="$(REGISTRY)" IMAGE_TAGS="$(IMAGE_TAGS)" \
		PLATFORMS="$(PLATFORMS)" PUSH="$(PUSH)" scripts/images.sh

# The images and the compose files under a real engine: the project's own
# (dockerd from Debian, started here and stopped after by its PID), the base
# images made locally (no registry is reachable), `make images`, then
# testenv/imagetest (each image for each platform, arm ones under qemu-user)
# and testenv/composetest's runs of every compose file with docker-compose.
test-images: .cache/setup-mosquitto .cache/setup-node
	@scripts/setup.sh docker
	@scripts/setup.sh tools fake-gcs-server
	@scripts/setup.sh engine-run $(MAKE) --no-print-directory test-images-on-engine VERSION=$(VERSION)
test-images-on-engine:
	@scripts/setup.sh base-images
	@$(MAKE) --no-print-directory images VERSION=$(VERSION)
	CLOUDBLOCK_ENGINE="$$DOCKER_HOST" CLOUDBLOCK_IMAGE_TAG=$(VERSION) $(GOTEST) -parallel 8 ./testenv/imagetest ./testenv/composetest
# make test's part: test-images where the project's engine can be started (root,
# Debian's packages, a kernel that runs it), else one line saying why not.
test-images-if-possible:
	@if why=$$(scripts/setup.sh engine probe 2>&1); then $(MAKE) --no-print-directory test-images VERSION=$(VERSION); \
	else echo "make test: test-images SKIPPED: no container engine can be started here ($$why)"; fi
.PHONY: test-images test-images-on-engine test-images-if-possible

clean:
	rm -rf bin .cache/setup-*
