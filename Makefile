# lmntd — see README.md. `make test` installs what the tests need, then runs them all.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(shell go env GOPATH 2>/dev/null || echo $(HOME)/go)/bin:$(PATH)
# Tests read the shared slicer fixtures from ../shared/fixtures (never copied into the repo).
export LMNTD_SHARED ?= $(abspath $(CURDIR)/../shared)

MODULE  := github.com/lmnt-marketplace/lmntd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X $(MODULE)/internal/version.Version=$(VERSION)
PYTHON  := /usr/bin/python3

.PHONY: all build deps tools test test-go test-python bench demo clean

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

test-go:
	go test -count=1 ./...

test-python:
	cd packaging/klipper && $(PYTHON) -m unittest discover -v -s . -p 'test_*.py'

bench: deps
	scripts/bench.sh

demo: build
	bin/lmnt demo

clean:
	rm -rf bin dist
