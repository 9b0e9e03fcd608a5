#!/usr/bin/env bash
# Runs the test suite against the debug build. Services the tests use are started here on free
# loopback ports and stopped on exit, also when tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=$(swift build --show-bin-path)
export CHEBACKUP_BIN_DIR="$BIN_DIR"

services=$(mktemp -d /tmp/chebackup-services.XXXXXX)
trap 'scripts/test-services.sh stop "$services"' EXIT
scripts/test-services.sh start "$services"
# shellcheck disable=SC1091
source "$services/env"
export CHEBACKUP_REQUIRE_SERVICES=1
swift test --skip-build "$@"
