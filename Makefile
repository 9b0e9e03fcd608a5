# che-backup: `make demo` runs the main job end to end, `make test` runs the tests,
# `make bench` measures against restic. Each installs what it needs first.
SHELL := /bin/bash
SWIFT ?= swift
RELEASE_DIR := .build-release

.PHONY: deps build release test demo demo-kubernetes demo-repo bench clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --scratch-path $(RELEASE_DIR)

test: deps
	$(SWIFT) build --build-tests
	scripts/run-tests.sh

demo: release
	CHEBACKUP=$(RELEASE_DIR)/release/chebackup scripts/demo.sh

demo-kubernetes: release
	CHEBACKUP=$(RELEASE_DIR)/release/chebackup scripts/demo-kubernetes.sh

demo-repo: release
	CHEBACKUP=$(RELEASE_DIR)/release/chebackup scripts/demo-repo.sh

bench: release
	scripts/bench.sh

clean:
	rm -rf .build $(RELEASE_DIR) bench-work
