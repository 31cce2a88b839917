#!/usr/bin/env bash
# Installs the real clients and peers the tests drive: Debian packages with
# apt-get, and Garage (the S3-compatible store) with `cargo install`.
# Idempotent: does nothing (and needs no network) when everything is already
# there.
set -euo pipefail

# command → Debian package that provides it
declare -A needs=(
  [/usr/lib/go-1.19/bin/go]=golang-1.19-go
  [/usr/share/gocode/src/golang.org/x/mod/sumdb/server.go]=golang-golang-x-mod-dev
  [/usr/bin/docker-registry]=docker-registry
  [/usr/bin/skopeo]=skopeo
  [/usr/bin/podman]=podman
  [/usr/bin/curl]=curl
  [/usr/bin/openssl]=openssl
  [/usr/bin/htpasswd]=apache2-utils
  [/usr/bin/git]=git
  [/usr/bin/ip]=iproute2        # network namespaces: tests/upstream_trust.rs, tests/docker_e2e.rs, tests/binary.rs
  [/usr/bin/prlimit]=util-linux # a lowered file limit for tests/http_dispatch.rs (/readyz)
  # unshare + nsenter: the first run in a network namespace of its own (tests/binary.rs)
  [/usr/bin/unshare]=util-linux
  [/usr/bin/nsenter]=util-linux
  # `systemd-analyze verify` checks deploy/mirror.service; in a container the
  # package only installs files (no systemd runs there, nothing is started).
  [/usr/bin/systemd-analyze]=systemd
  [/usr/sbin/dockerd]=docker.io
  [/usr/bin/docker]=docker.io
  [/usr/bin/containerd]=containerd
  [/usr/bin/ctr]=containerd
  [/usr/lib/postgresql/15/bin/initdb]=postgresql   # private clusters for tests/engines.rs
  [/usr/bin/setpriv]=util-linux # runs initdb and postgres as the postgres user (they refuse root)
)
# Packages that bookworm has only in bookworm-backports (Go 1.23 beside 1.19).
declare -A backports=(
  [/usr/lib/go-1.23/bin/go]=golang-1.23-go
)
if [[ "${MIRROR_BENCH_DEPS:-}" == 1 ]]; then
  needs[/usr/sbin/nginx]=nginx
  needs[/usr/bin/wrk]=wrk
  needs[/usr/bin/h2load]=nghttp2-client
  needs[/usr/bin/taskset]=util-linux
fi

install_debian_packages() {
  local missing=() missing_backports=() path
  for path in "${!needs[@]}"; do
    [[ -e "$path" ]] || missing+=("${needs[$path]}")
  done
  for path in "${!backports[@]}"; do
    [[ -e "$path" ]] || missing_backports+=("${backports[$path]}")
  done
  if ((${#missing[@]} == 0 && ${#missing_backports[@]} == 0)); then
    return 0
  fi

  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  echo "installing test dependencies: ${missing[*]} ${missing_backports[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ((${#missing_backports[@]} > 0)) &&
    ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $sudo tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  $sudo apt-get update -qq
  if ((${#missing[@]} > 0)); then
    $sudo apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
  fi
  if ((${#missing_backports[@]} > 0)); then
    $sudo apt-get install -y -qq --no-install-recommends -t bookworm-backports \
      "${missing_backports[@]}" >/dev/null
  fi
}

# Garage is AGPL: the tests run it as an external program and never link it.
# crates.io is the only place it can come from here, so it is built from
# source, once per machine; tests/common/garage.rs looks for it in cargo's bin
# dir and on PATH.
GARAGE_VERSION=2.5.0
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"

garage_installed() {
  local bin
  for bin in "$(command -v garage || true)" "$cargo_bin/garage"; do
    [[ -n "$bin" && -x "$bin" ]] || continue
    # crates.io builds report themselves as `garage cargo:2.5.0`.
    if "$bin" --version 2>/dev/null | grep -Eq "(^|[^0-9.])${GARAGE_VERSION//./\\.}([^0-9]|$)"; then
      return 0
    fi
  done
  return 1
}

install_garage() {
  garage_installed && return 0
  # Two test runs starting at once must not both spend half an hour building.
  mkdir -p "$cargo_bin"
  exec 9>"$cargo_bin/.garage-install.lock"
  flock 9
  if ! garage_installed; then
    echo "building Garage $GARAGE_VERSION from crates.io for the S3 tests;" \
      "this takes 15-30 minutes on 2 cores, once per machine" >&2
    cargo install garage --version "$GARAGE_VERSION" --locked --quiet
  fi
  exec 9>&-
}

install_debian_packages
# The benchmarks (MIRROR_BENCH_DEPS=1) need no S3 store, except the cluster
# scenario (MIRROR_BENCH_GARAGE=1).
if [[ "${MIRROR_BENCH_DEPS:-}" != 1 || "${MIRROR_BENCH_GARAGE:-}" == 1 ]]; then
  install_garage
fi
