#!/usr/bin/env bash
# Builds quorumfs and runs every test. Installs missing Debian packages first (idempotent,
# non-interactive). This is the one command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh
ensure_packages

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j"$(nproc)"
cd "$BUILD_DIR"
# One test at a time: the integration tests use ~1 s deadlines and the simulator is CPU-bound;
# running them side by side on a 2-core machine would make the deadlines flaky.
ctest --output-on-failure -j1 "$@"
