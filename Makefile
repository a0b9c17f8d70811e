# lmntd — see README.md. `make test` installs what the tests need, then runs them all.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(shell go env GOPATH 2>/dev/null || echo $(HOME)/go)/bin:$(PATH)
# Tests read the shared slicer fixtures from ../shared/fixtures (never copied into the repo).
export LMNTD_SHARED ?= $(abspath $(CURDIR)/../shared)

MODULE  := github.com/lmnt-marketplace/lmntd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X $(MODULE)/internal/version.Version=$(VERSION)
PYTHON  := /usr/bin/python3

.PHONY: all build deps tools test test-go test-python test-system test-image release-snapshot bench demo clean

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

deps:
	@scripts/install-deps.sh

tools:
	@scripts/install-deps.sh --tools

test: deps
	go vet ./...
	$(MAKE) test-go
	$(MAKE) test-python
	$(MAKE) test-system
	IMAGE_TEST_DEB_DIR=$(CURDIR)/dist $(MAKE) test-image

test-go:
	go test -count=1 ./...

test-python:
	cd packaging/klipper && $(PYTHON) -m unittest discover -v -s . -p 'test_*.py'

# The packaging acceptance (test/system): unit hardening score and verify,
# the goreleaser snapshot and its binaries under qemu, the signed apt
# repository, and install/setup/print/upgrade/purge in a booted Debian 12
# container. Needs root and goreleaser (make tools).
test-system: tools
	go vet -tags system ./test/system/
	go test -tags system -count=1 -v -timeout 30m ./test/system/

# Every release artifact (tarballs, .debs, checksums) in dist/, offline and
# unsigned; a tagged release signs with $$GPG_FINGERPRINT.
release-snapshot: tools
	goreleaser release --snapshot --clean --skip=sign

bench: deps
	scripts/bench.sh

demo: build
	bin/lmnt-demo

clean:
	rm -rf bin dist build

# Image glue (image/): each builder's drop-in applied to a foreign arm64
# Debian 12 root, and the first-boot unit booted three times under
# systemd-nspawn. Needs root; the first run debootstraps arm64 through qemu
# (3–20 min with the machine's load), later runs take ≈ 2–3 min.
# Set IMAGE_TEST_DEB_DIR to test .debs built elsewhere instead of building
# them (make test reuses the snapshot test-system just built).
test-image: deps
	@if [ -z "$$IMAGE_TEST_DEB_DIR" ]; then $(MAKE) release-snapshot; fi
	go vet -tags system ./image/test/
	go test -tags system -count=1 -timeout 45m -v ./image/test/
