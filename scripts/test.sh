#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test in the
# workspace, unit, integration and end-to-end (real go, skopeo, podman, curl,
# docker-registry), in one `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
exec cargo test --workspace "$@"
