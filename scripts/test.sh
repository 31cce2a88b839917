#!/usr/bin/env bash
# The test command: installs what the tests need, holds the gates (formatting,
# clippy with warnings as errors, the module layering), then runs every test in
# the workspace, unit, integration and end-to-end (real go 1.19 and 1.23,
# skopeo, podman, dockerd, containerd, curl, docker-registry), in one
# `cargo test`. The dockerd and network-namespace tests need root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# On its own first, so an import against the layering fails in seconds.
cargo test --test layering
exec cargo test --workspace "$@"
